"""One-run benchmark of the trainer: throughput against the env's own limit, time-to-solve,
memory over a long run, a per-iteration breakdown, and Stable-Baselines3 peers when installed.

    python -m benchmarks.benchmark [--smoke] [--json OUT] [--only ROWS]

Rows (`--only` takes a comma-separated list of names, fnmatch patterns or group names):
  limit-*            the trainer's vector env stepping pre-sampled random actions, one process per
                     core the trainer's workers get (group `limit`)
  {inline,ray1,ray2}-{mlp,lstm}
                     our steps/s over a fixed step count after warm-up iterations, driving
                     InlineRuntime / RayRuntime.iterate() directly (group `ours`); ratio to the
                     row's limit and to SB3 at the same env count
  solve-{inline,ray} `python -m trainer train configs/cartpole.yaml` in a subprocess, timed from
                     launch (interpreter start, imports, Ray start-up included) to the progress
                     line of the iteration that solved it, and to exit (group `solve`)
  memory             current and peak RSS of the driver, each worker and the learner after
                     iteration 20 and 200 of a Ray 2-worker MLP run (fresh driver process)
  breakdown          where one Ray 2-worker MLP iteration goes (from the ray2-mlp run)
  sb3-*              Stable-Baselines3 PPO / sb3-contrib RecurrentPPO peers (group `peers`);
                     skipped with a note when not installed

Everything runs one after the other on this machine; nothing else should be running.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"mlp": "configs/cartpole.yaml", "lstm": "configs/cartpole_masked_lstm.yaml"}
ENV_IDS = {"mlp": "CartPole-v1", "lstm": "MaskedVelocityCartPole-v1"}
ENVS_PER_WORKER = 32
SOLVE_CONFIG = "configs/cartpole.yaml"
SOLVE_THRESHOLD = 475.0


@dataclass(frozen=True)
class Params:
    limit_steps: int  # vector steps per limit process
    warmup_iterations: int
    measured_steps: dict  # policy -> env steps measured per row (fixed across rows)
    memory_probes: tuple[int, int]
    solve_seeds: tuple[int, ...]
    solve_overrides: tuple[str, ...]
    sb3_warmup: int
    sb3_iterations: dict  # policy -> measured rollouts
    sb3_solve_max_steps: int
    idle_wait_s: float  # before each row, wait up to this long for other processes to go quiet


FULL = Params(
    limit_steps=4000,
    warmup_iterations=3,
    measured_steps={"mlp": 40 * 8192, "lstm": 20 * 8192},
    memory_probes=(20, 200),
    solve_seeds=(1, 2, 3),
    solve_overrides=(),
    sb3_warmup=1,
    sb3_iterations={"mlp": 8, "lstm": 3},
    sb3_solve_max_steps=100_000,
    idle_wait_s=60.0,
)
SMOKE = Params(
    limit_steps=500,
    warmup_iterations=1,
    measured_steps={"mlp": 2 * 8192, "lstm": 8192},
    memory_probes=(2, 4),
    solve_seeds=(1,),
    solve_overrides=("ppo.total_steps=2048",),
    sb3_warmup=1,
    sb3_iterations={"mlp": 1, "lstm": 1},
    sb3_solve_max_steps=2048,
    idle_wait_s=0.0,
)

# name -> (execution, num_workers, policy)
OURS = {
    f"{mode}-{policy}": (("inline" if mode == "inline" else "ray"), (1 if mode == "ray1" else 2), policy)
    for policy in ("mlp", "lstm")
    for mode in ("inline", "ray1", "ray2")
}
SOLVE_ROWS = {"solve-inline": "inline", "solve-ray": "ray"}
SB3_ROWS = {f"sb3-{policy}-{n}": (policy, n) for policy in ("mlp", "lstm") for n in (64, 32)}
GROUPS = {
    "ours": list(OURS),
    "solve": [*SOLVE_ROWS],
    "peers": [*SB3_ROWS, "sb3-solve"],
    "memory": ["memory"],
    "breakdown": ["breakdown"],
}


def limit_name(name: str) -> str:
    execution, workers, policy = OURS[name]
    setup = "inline" if execution == "inline" else f"{workers}proc"
    return f"limit-{policy}-{setup}"


def limit_spec(name: str) -> tuple[str, int, int, int]:
    """(env id, processes, vector envs per process, envs each) of a limit row."""
    _, policy, setup = name.split("-")
    if setup == "inline":  # inline: all workers' envs stepped in turn in one process
        return ENV_IDS[policy], 1, 2, ENVS_PER_WORKER
    return ENV_IDS[policy], int(setup.removesuffix("proc")), 1, ENVS_PER_WORKER


LIMIT_ROWS = sorted({limit_name(name) for name in OURS})
GROUPS["limit"] = LIMIT_ROWS
ALL_ROWS = [*LIMIT_ROWS, *OURS, *SOLVE_ROWS, "memory", "breakdown", *SB3_ROWS, "sb3-solve"]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def select_rows(only: str | None) -> list[str]:
    if not only:
        return list(ALL_ROWS)
    chosen: set[str] = set()
    for item in filter(None, (part.strip() for part in only.split(","))):
        matched = GROUPS.get(item) or fnmatch.filter(ALL_ROWS, item)
        if not matched:
            raise SystemExit(
                f"--only: {item!r} matches no row; rows: {', '.join(ALL_ROWS)}; groups: {', '.join(GROUPS)}"
            )
        chosen.update(matched)
    return [row for row in ALL_ROWS if row in chosen]


def child_pids() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def wait_for_children_to_exit(before: set[int], timeout_s: float = 15.0) -> None:
    """After a Ray shutdown its processes linger a moment; let them go before the next timing.
    `before`: children that were there already (e.g. multiprocessing's resource tracker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child_pids() - before:
        time.sleep(0.1)


class ForeignLoad:
    """Samples, once a second, the CPU used by processes outside this benchmark's process tree
    (another test run on the same machine skews every number here)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        import threading

        self.interval_s = interval_s
        self.samples: list[float] = []
        self.stamps: list[float] = []  # time.monotonic() at the end of each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ForeignLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _cpu_by_pid(self) -> dict[int, float]:
        import psutil

        ours = {os.getpid(), *child_pids()}
        usage = {}
        for proc in psutil.process_iter(["pid", "cpu_times"]):
            times = proc.info["cpu_times"]
            if proc.info["pid"] not in ours and times is not None:
                usage[proc.info["pid"]] = times.user + times.system
        return usage

    def _run(self) -> None:
        previous, last = self._cpu_by_pid(), time.monotonic()
        while not self._stop.wait(self.interval_s):
            current, now = self._cpu_by_pid(), time.monotonic()
            busy = sum(t - previous.get(pid, t) for pid, t in current.items())
            self.samples.append(max(0.0, busy / (now - last)))
            self.stamps.append(now)
            previous, last = current, now

    def mean_between(self, start: float, end: float) -> float | None:
        """Mean cores used by other processes over [start, end] (monotonic clock)."""
        inside = [x for x, t in zip(self.samples, self.stamps) if start < t <= end + self.interval_s]
        return statistics.fmean(inside) if inside else None

    def wait_idle(self, max_wait_s: float, threshold: float = 0.15) -> float:
        """Wait (at most max_wait_s) until two samples in a row show other processes below
        `threshold` cores; returns the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < max_wait_s:
            recent = [x for x, t in zip(self.samples, self.stamps) if t > began]
            if len(recent) >= 2 and max(recent[-2:]) < threshold:
                break
            time.sleep(self.interval_s / 2)
        return time.monotonic() - began

    def summary(self) -> dict:
        if not self.samples:
            return {"mean_cores": 0.0, "max_cores": 0.0, "seconds_above_0.2_cores": 0}
        return {
            "mean_cores": statistics.fmean(self.samples),
            "max_cores": max(self.samples),
            "seconds_above_0.2_cores": sum(1 for x in self.samples if x > 0.2) * self.interval_s,
        }


# ---------------------------------------------------------------------------------------------
# Ours: throughput and breakdown


def ours_config(name: str, iterations_total: int | None = None):
    from trainer.config import load_config

    execution, workers, policy = OURS[name]
    base = [
        f"execution={execution}",
        f"workers.num_workers={workers}",
        f"workers.envs_per_worker={ENVS_PER_WORKER}",
        "logging.progress_interval_s=1000",
        "logging.tensorboard=false",
    ]
    config = load_config(REPO_ROOT / CONFIGS[policy], base)
    if iterations_total is not None:  # so the LR schedule stays positive over the whole run
        config = load_config(config, [f"ppo.total_steps={iterations_total * config.steps_per_iteration}"])
    return config


def run_ours(name: str, params: Params) -> dict:
    from trainer.driver import InlineRuntime
    from workers.envs import probe_env

    execution, workers, policy = OURS[name]
    probe = ours_config(name)
    measured_iterations = max(1, params.measured_steps[policy] // probe.steps_per_iteration)
    config = ours_config(name, params.warmup_iterations + measured_iterations)
    observation_space, action_space, _ = probe_env(config.env)
    before = child_pids()
    created = time.perf_counter()
    if execution == "ray":
        from trainer.ray_runtime import RayRuntime

        runtime = RayRuntime(config, observation_space, action_space, log=log)
    else:
        runtime = InlineRuntime(config, observation_space, action_space)
    iterations = []
    restarts = 0
    try:
        runtime.iterate()
        first_iteration_done = time.perf_counter()
        for _ in range(params.warmup_iterations - 1):
            runtime.iterate()
        start = time.perf_counter()
        for _ in range(measured_iterations):
            tick = time.perf_counter()
            stats = runtime.iterate()
            wall = time.perf_counter() - tick
            restarts += stats.restarts
            iterations.append(
                {
                    "iteration_s": wall,
                    **{k: v for k, v in stats.metrics.items() if k.endswith("_time_s")},
                    "worker_env_s": [t.get("env_s", math.nan) for t in stats.worker_timings],
                    "worker_forward_s": [t.get("forward_s", math.nan) for t in stats.worker_timings],
                }
            )
        end = time.perf_counter()
    finally:
        runtime.close()
    if execution == "ray":
        wait_for_children_to_exit(before)
    steps = measured_iterations * config.steps_per_iteration
    return {
        "group": "ours",
        "label": f"{execution}, {workers} worker{'s' * (workers > 1)} x {ENVS_PER_WORKER} envs, {policy.upper()}",
        "env_id": config.env.id,
        "execution": execution,
        "num_workers": workers,
        "envs_per_worker": ENVS_PER_WORKER,
        "total_envs": config.total_envs,
        "policy": policy,
        "steps_per_iteration": config.steps_per_iteration,
        "warmup_iterations": params.warmup_iterations,
        "measured_iterations": measured_iterations,
        "env_steps": steps,
        "wall_s": end - start,
        "steps_per_s": steps / (end - start),
        "startup_and_first_iteration_s": first_iteration_done - created,
        "worker_restarts": restarts,  # > 0: a worker died during the measurement (skewed)
        "iterations": iterations,
    }


def breakdown_from(run: dict) -> dict:
    """Mean seconds per iteration of each phase, and its share of the iteration's wall time."""
    its = run["iterations"]

    def mean(key):
        values = [it[key] for it in its if key in it]
        return statistics.fmean(values) if values else math.nan

    env = statistics.fmean(statistics.fmean(it["worker_env_s"]) for it in its)
    forward = statistics.fmean(statistics.fmean(it["worker_forward_s"]) for it in its)
    busiest = statistics.fmean(max(e + f for e, f in zip(it["worker_env_s"], it["worker_forward_s"])) for it in its)
    iteration = mean("iteration_s")
    collect, transfer, copy, update = (
        mean(k) for k in ("collect_time_s", "transfer_time_s", "copy_time_s", "update_time_s")
    )
    known = sum(x for x in (collect, transfer, copy, update) if not math.isnan(x))
    phases = [
        ("collect (driver: submit -> all rollout infos back)", collect, 0),
        ("env stepping (worker mean, env_s)", env, 1),
        ("policy forward (worker mean, forward_s)", forward, 1),
        ("rest of collect (collect - busiest worker's env+forward)", collect - busiest, 1),
        ("transfer (learner ray.get of rollouts)", transfer, 0),
        ("buffer copy (learner receive/check/store)", copy, 0),
        ("learner update (PPO epochs)", update, 0),
        ("other (snapshot publish, Ray calls, driver)", iteration - known, 0),
        ("iteration (driver wall time of iterate())", iteration, 0),
    ]
    return {
        "group": "breakdown",
        "label": f"from {run['measured_iterations']} measured iterations of {run['label']}",
        "source_row": "ray2-mlp",
        "steps_per_iteration": run["steps_per_iteration"],
        "steps_per_s": run["steps_per_iteration"] / iteration,
        "phases": [{"phase": p, "seconds": s, "share": s / iteration, "indent": i} for p, s, i in phases],
    }


# ---------------------------------------------------------------------------------------------
# Subprocess-based rows: memory, time-to-solve, peers


def run_subprocess(cmd: list[str], timeout_s: float, line_hook=None) -> tuple[int, list[tuple[float, str]], float]:
    """Run cmd from the repo root; every output line with the seconds since launch it arrived at."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    launch = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        stamp = time.perf_counter() - launch
        lines.append((stamp, line.rstrip("\n")))
        if stamp > timeout_s:
            proc.kill()
            break
    code = proc.wait(timeout=max(1.0, timeout_s))
    return code, lines, time.perf_counter() - launch


def result_line(lines: list[tuple[float, str]], prefix: str, cmd: list[str], code: int):
    for _, line in reversed(lines):
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    tail = "\n".join(line for _, line in lines[-30:])
    raise RuntimeError(f"{' '.join(cmd)} exited {code} without a result line:\n{tail}")


def run_memory(params: Params) -> dict:
    from benchmarks.memory import RESULT_PREFIX

    first, last = params.memory_probes
    overrides = ["workers.num_workers=2", f"workers.envs_per_worker={ENVS_PER_WORKER}", "logging.tensorboard=false"]
    cmd = [sys.executable, "-m", "benchmarks.memory", CONFIGS["mlp"], "--probe", str(first), "--probe", str(last)]
    for item in overrides:
        cmd += ["--set", item]
    before = child_pids()
    code, lines, _ = run_subprocess(cmd, timeout_s=600)
    result = result_line(lines, RESULT_PREFIX, cmd, code)
    wait_for_children_to_exit(before)
    a, b = result["readings"][str(first)], result["readings"][str(last)]
    processes = []
    for name in a:
        growth = {
            key: 100.0 * (b[name][key] - a[name][key]) / a[name][key] if a[name][key] else math.nan
            for key in ("rss_mib", "peak_rss_mib")
        }
        processes.append(
            {
                "process": name,
                "at_first": a[name],
                "at_last": b[name],
                "rss_growth_pct": growth["rss_mib"],
                "peak_growth_pct": growth["peak_rss_mib"],
            }
        )
    return {
        "group": "memory",
        "label": f"ray, 2 workers x {ENVS_PER_WORKER} envs, MLP; after iteration {first} and {last}",
        "probes": [first, last],
        "pids": result["pids"],
        "processes": processes,
        "steps_per_s": result["steps_per_s"],
        "worker_restarts": result["worker_restarts"],
        "command": " ".join(cmd[1:]),
    }


PROGRESS = re.compile(r"^step (\d+)/(\d+)")


def run_solve(name: str, params: Params) -> dict:
    mode = SOLVE_ROWS[name]
    runs = []
    for seed in params.solve_seeds:
        with tempfile.TemporaryDirectory(prefix="bench-solve-") as tmp:
            run_dir = Path(tmp) / "run"
            cmd = [sys.executable, "-m", "trainer", "train", SOLVE_CONFIG, "--run-dir", str(run_dir)]
            for item in [f"execution={mode}", f"seed={seed}", "logging.progress_interval_s=0.001"]:
                cmd += ["--set", item]
            for item in params.solve_overrides:
                cmd += ["--set", item]
            log(f"{name}: seed {seed}")
            before = child_pids()
            code, lines, run_wall = run_subprocess(cmd, timeout_s=600)
            summary_path = run_dir / "summary.json"
            if code != 0 or not summary_path.exists():
                tail = "\n".join(line for _, line in lines[-30:])
                raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{tail}")
            summary = json.loads(summary_path.read_text())
        solved = summary.get("solved_at_step")
        solve_s = None
        if solved is not None:
            for stamp, line in lines:
                match = PROGRESS.match(line)
                if match and int(match.group(1)) == solved:
                    solve_s = stamp
                    break
        runs.append(
            {
                "seed": seed,
                "solved_at_step": solved,
                "time_to_solve_s": solve_s,
                "run_wall_s": run_wall,
                "train_loop_wall_s": summary["wall_time_s"],
                "env_steps": summary["env_steps"],
                "steps_per_s": summary["steps_per_s"],
                "mean_return_last20": summary["mean_return_last20"],
            }
        )
        if mode == "ray":
            wait_for_children_to_exit(before)
    return solve_row(
        f"ours, {mode}: {SOLVE_CONFIG} as is (2 workers x 4 envs)", " ".join(cmd[1:]).replace(tmp, "TMP"), runs
    )


def solve_row(label: str, command: str, runs: list[dict]) -> dict:
    solved = [r for r in runs if r["solved_at_step"] is not None and r["time_to_solve_s"] is not None]
    return {
        "group": "solve",
        "label": label,
        "command": command,
        "runs": runs,
        "seeds_solved": f"{len(solved)}/{len(runs)}",
        "median_solved_at_step": statistics.median(r["solved_at_step"] for r in solved) if solved else None,
        "median_time_to_solve_s": statistics.median(r["time_to_solve_s"] for r in solved) if solved else None,
        "median_run_wall_s": statistics.median(r["run_wall_s"] for r in runs),
        "steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
    }


def run_sb3_throughput(names: list[str], params: Params) -> dict[str, dict]:
    from benchmarks.peers import RESULT_PREFIX

    specs = []
    for name in names:
        policy, envs = SB3_ROWS[name]
        config = ours_config(f"ray2-{policy}")
        specs.append(
            {
                "policy": policy,
                "envs": envs,
                "rollout_steps": config.ppo.rollout_steps,
                "num_minibatches": config.ppo.num_minibatches,
                "update_epochs": config.ppo.update_epochs,
                "warmup": params.sb3_warmup,
                "iterations": params.sb3_iterations[policy],
            }
        )
    cmd = [sys.executable, "-m", "benchmarks.peers", "throughput", json.dumps(specs)]
    code, lines, _ = run_subprocess(cmd, timeout_s=600)
    results = result_line(lines, RESULT_PREFIX, cmd, code)
    rows = {}
    for name, spec, result in zip(names, specs, results):
        rows[name] = {"group": "peers", "label": result["setup"], "policy": spec["policy"], "total_envs": spec["envs"]}
        rows[name].update(result)
    return rows


def run_sb3_solve(params: Params) -> dict:
    from benchmarks.peers import RESULT_PREFIX, SOLVED_PREFIX

    runs = []
    for seed in params.solve_seeds:
        cmd = [sys.executable, "-m", "benchmarks.peers", "solve", "--seed", str(seed)]
        cmd += ["--max-steps", str(params.sb3_solve_max_steps)]
        log(f"sb3-solve: seed {seed}")
        code, lines, run_wall = run_subprocess(cmd, timeout_s=600)
        result = result_line(lines, RESULT_PREFIX, cmd, code)
        solve_s = next((stamp for stamp, line in lines if line.startswith(SOLVED_PREFIX)), None)
        runs.append(
            {
                "seed": seed,
                "solved_at_step": result["solved_at_step"],
                "time_to_solve_s": solve_s,
                "run_wall_s": run_wall,
                "env_steps": result["env_steps"],
                "steps_per_s": result["steps_per_s"],
            }
        )
    return solve_row("SB3 PPO, RL-Zoo CartPole-v1 hyperparameters (8 envs), stops at solve", " ".join(cmd[1:]), runs)


# ---------------------------------------------------------------------------------------------
# Output


def fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def table(title: str, headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(
            (str(c).rjust(w) if i in right else str(c).ljust(w)) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(headers))
    return "\n".join([title, rule, line(headers), rule, *(line(r) for r in rows), rule])


def render(results: dict, skipped: dict, meta: dict) -> str:
    load = meta["foreign_cpu_load"]
    out = [
        f"Benchmark ({'smoke' if meta['smoke'] else 'full'}) on {meta['machine']}; "
        f"{meta['cpu_count']} CPU cores; torch {meta['torch']}; total {meta['total_wall_s']:.0f} s; "
        f"CPU used by other processes: mean {load['mean_cores']:.2f} cores, max {load['max_cores']:.2f}"
    ]
    out.append(
        "busy: mean CPU cores used by processes outside this benchmark while the row ran (0 is a clean measurement)."
    )
    restarted = [name for name, r in results.items() if r.get("worker_restarts")]
    if restarted:
        out.append(
            f"WARNING: rollout workers died and were replaced during {', '.join(restarted)}; those rows are skewed."
        )
    if load["mean_cores"] > 0.2:
        out.append("WARNING: other processes used this machine's CPU during the run; rows with busy > 0.1 are skewed.")
    rows = []
    for name in [*OURS, *SB3_ROWS]:
        if name in results:
            r = results[name]
            rows.append(
                [
                    name,
                    r["label"],
                    fmt(r.get("env_steps")),
                    fmt(r["steps_per_s"]),
                    fmt(r.get("limit_steps_per_s")),
                    fmt(r.get("ratio_to_limit"), ".1%"),
                    fmt(r.get("sb3_steps_per_s")),
                    fmt(r.get("ratio_to_sb3"), ".2f"),
                    fmt(r.get("foreign_cpu_cores"), ".2f"),
                ]
            )
        elif name in skipped:
            rows.append([name, f"skipped: {skipped[name]}", "", "", "", "", "", "", ""])
    if rows:
        out.append(
            table(
                "Throughput: env steps/s after warm-up (ours: InlineRuntime/RayRuntime.iterate(); limit: same vector "
                "env, random actions, one process per worker core)",
                ["row", "setup", "steps", "steps/s", "limit", "ours/limit", "SB3 same envs", "ours/SB3", "busy"],
                rows,
                right={2, 3, 4, 5, 6, 7, 8},
            )
        )
    rows = [
        [name, r["label"], fmt(r["steps_per_s"]), fmt(r.get("foreign_cpu_cores"), ".2f")]
        for name in LIMIT_ROWS
        if (r := results.get(name)) is not None
    ]
    if rows:
        out.append(
            table("Limits: env steps/s (sum over processes)", ["row", "setup", "steps/s", "busy"], rows, right={2, 3})
        )
    rows = []
    for name in [*SOLVE_ROWS, "sb3-solve"]:
        if name in results:
            r = results[name]
            per_seed = ", ".join(
                f"s{x['seed']}:{fmt(x['solved_at_step'], 'd', 'no')}@{fmt(x['time_to_solve_s'], '.1f', '-')}s"
                for x in r["runs"]
            )
            rows.append(
                [
                    name,
                    r["seeds_solved"],
                    fmt(r["median_solved_at_step"]),
                    fmt(r["median_time_to_solve_s"], ".1f"),
                    fmt(r["median_run_wall_s"], ".1f"),
                    fmt(r["steps_per_s"]),
                    fmt(r.get("foreign_cpu_cores"), ".2f"),
                    per_seed,
                ]
            )
        elif name in skipped:
            rows.append([name, f"skipped: {skipped[name]}", "", "", "", "", "", ""])
    if rows:
        out.append(
            table(
                "Time to solve CartPole-v1 (last-20 mean >= 475), each seed a fresh process; time from launch "
                "(imports, Ray start-up included)",
                [
                    "row",
                    "solved",
                    "median steps",
                    "median s to solve",
                    "median run wall s",
                    "steps/s",
                    "busy",
                    "per seed",
                ],
                rows,
                right={2, 3, 4, 5, 6},
            )
        )
        notes = [f"  {name}: {results[name]['label']}" for name in [*SOLVE_ROWS, "sb3-solve"] if name in results]
        notes += [
            "  s to solve: launch -> the progress line of the iteration whose last-20 mean first reached 475 "
            "(ours checks once per iteration = 1024 steps; SB3 after every vector step and stops there).",
            "  run wall: launch -> exit; ours trains the config's whole ppo.total_steps. steps/s: ours = summary.json "
            "(train loop), SB3 = learn() rate.",
        ]
        out.append("\n".join(notes))
    if "memory" in results:
        r = results["memory"]
        first, last = r["probes"]
        rows = [
            [
                p["process"],
                fmt(p["at_first"]["rss_mib"], ".1f"),
                fmt(p["at_first"]["peak_rss_mib"], ".1f"),
                fmt(p["at_last"]["rss_mib"], ".1f"),
                fmt(p["at_last"]["peak_rss_mib"], ".1f"),
                fmt(p["rss_growth_pct"], "+.1f"),
                fmt(p["peak_growth_pct"], "+.1f"),
            ]
            for p in r["processes"]
        ]
        out.append(
            table(
                f"Memory (MiB) of {r['label']}",
                [
                    "process",
                    f"RSS@{first}",
                    f"peak@{first}",
                    f"RSS@{last}",
                    f"peak@{last}",
                    "RSS growth %",
                    "peak growth %",
                ],
                rows,
            )
        )
    if "breakdown" in results:
        r = results["breakdown"]
        rows = [
            [("    " * p["indent"]) + p["phase"], fmt(p["seconds"] * 1000, ".1f"), fmt(p["share"], ".1%")]
            for p in r["phases"]
        ]
        out.append(
            table(
                f"Breakdown of one Ray 2-worker MLP iteration ({r['steps_per_iteration']} env steps), {r['label']}; "
                "indented rows are inside collect",
                ["phase", "ms/iteration", "share"],
                rows,
            )
        )
    return "\n\n".join(out)


# ---------------------------------------------------------------------------------------------


def link_ratios(results: dict) -> None:
    for name in OURS:
        row = results.get(name)
        if row is None:
            continue
        limit = results.get(limit_name(name))
        if limit is not None:
            row["limit_row"] = limit_name(name)
            row["limit_steps_per_s"] = limit["steps_per_s"]
            row["ratio_to_limit"] = row["steps_per_s"] / limit["steps_per_s"]
        sb3_name = f"sb3-{row['policy']}-{row['total_envs']}"
        sb3 = results.get(sb3_name)
        row["sb3_row"] = sb3_name
        row["sb3_steps_per_s"] = sb3["steps_per_s"] if sb3 else None
        row["ratio_to_sb3"] = row["steps_per_s"] / sb3["steps_per_s"] if sb3 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every row with tiny step counts (CI)")
    parser.add_argument("--json", help="write the results here (default: runs/benchmark-<time>.json)")
    parser.add_argument("--only", help=f"comma-separated rows, patterns or groups ({', '.join(GROUPS)})")
    args = parser.parse_args(argv)
    params = SMOKE if args.smoke else FULL
    selected = select_rows(args.only)
    began = time.perf_counter()
    with ForeignLoad() as foreign:
        results, skipped = run_rows(selected, params, foreign)
    link_ratios(results)
    import torch

    meta = {
        "smoke": args.smoke,
        "command": " ".join(["python", "-m", "benchmarks.benchmark", *(sys.argv[1:] if argv is None else argv)]),
        "machine": f"{platform.node()} ({platform.machine()})",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "params": dict(params.__dict__),
        "foreign_cpu_load": foreign.summary(),
        "total_wall_s": time.perf_counter() - began,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    text = render(results, skipped, meta)
    print(text, flush=True)
    out = Path(args.json) if args.json else REPO_ROOT / "runs" / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": results, "skipped": skipped, "table": text}
    out.write_text(json.dumps(_finite(payload), indent=2, default=str, allow_nan=False) + "\n")
    log(f"wrote {out}")
    return 0


def run_rows(selected: list[str], params: Params, foreign: ForeignLoad) -> tuple[dict[str, dict], dict[str, str]]:
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}

    def measure(names: list[str], run, *args):
        """Wait for the machine to be quiet, run, and note on each row the CPU other processes used."""
        waited = foreign.wait_idle(params.idle_wait_s) if params.idle_wait_s else 0.0
        if waited >= params.idle_wait_s > 0:
            log(f"machine still busy after waiting {waited:.0f}s; measuring anyway")
        start = time.monotonic()
        out = run(*args)
        load = foreign.mean_between(start, time.monotonic())
        rows = out if run is run_sb3_throughput else {names[0]: out}
        for row in rows.values():
            row["foreign_cpu_cores"] = load
        return out

    ours_selected = [n for n in OURS if n in selected]
    if "breakdown" in selected and "ray2-mlp" not in ours_selected:
        ours_selected.append("ray2-mlp")
    limits = sorted({limit_name(n) for n in ours_selected} | {n for n in LIMIT_ROWS if n in selected})
    for name in limits:
        from benchmarks.limit import measure_limit

        env_id, procs, vecs, envs = limit_spec(name)
        log(f"{name}: {procs} process(es) x {vecs} x {envs} envs of {env_id}")
        row = measure([name], measure_limit, env_id, procs, vecs, envs, params.limit_steps)
        setup = f"{vecs} x {envs} envs in turn" if vecs > 1 else f"{envs} envs"
        row.update(group="limit", label=f"{env_id}, {procs} process{'es' * (procs > 1)} x {setup}")
        results[name] = row

    for name in ours_selected:
        log(f"{name}: running")
        row = measure([name], run_ours, name, params)
        log(f"{name}: {row['steps_per_s']:,.0f} steps/s")
        if name == "ray2-mlp" and "breakdown" in selected:
            results["breakdown"] = breakdown_from(row)
            results["breakdown"]["foreign_cpu_cores"] = row["foreign_cpu_cores"]
        if name in selected:
            results[name] = row

    if "memory" in selected:
        log("memory: Ray 2-worker MLP run in a fresh driver process")
        results["memory"] = measure(["memory"], run_memory, params)

    for name in SOLVE_ROWS:
        if name in selected:
            results[name] = measure([name], run_solve, name, params)

    from benchmarks.peers import available

    missing = available()
    sb3_missing = missing["stable_baselines3"]
    runnable = []
    for name in SB3_ROWS:
        if name not in selected:
            continue
        reason = sb3_missing or (missing["sb3_contrib"] if SB3_ROWS[name][0] == "lstm" else None)
        if reason:
            skipped[name] = reason
        else:
            runnable.append(name)
    if runnable:
        log(f"peers: {', '.join(runnable)}")
        results.update(measure(runnable, run_sb3_throughput, runnable, params))
    if "sb3-solve" in selected:
        if sb3_missing:
            skipped["sb3-solve"] = sb3_missing
        else:
            log("sb3-solve: running")
            results["sb3-solve"] = measure(["sb3-solve"], run_sb3_solve, params)
    return results, skipped


def _finite(value):
    """NaN and inf become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
