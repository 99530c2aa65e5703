"""The work floor: what these cores allow a config, from the CPU its unavoidable work takes per
env step, against what a whole run achieves and what SB3 does with the same envs.

Per env step, in CPU time (all of a process's threads):
  (a) env: the worker's vector env, as `make_vector_env` builds it from the config, stepping
      pre-sampled random actions;
  (b) act: the policy's `act` at the worker's batch (`workers.envs_per_worker`), divided by it;
  (c) update: the learner's update of one iteration's rollouts, per sample;
  floor = cores / (a + b + c) env steps/s: every core busy with that work and nothing else;
  (d) everything else = cores / achieved - (a + b + c): coordination, copies, bookkeeping and
      idle cores, so that achieved / floor = (a + b + c) / (a + b + c + d).
(a)-(c) run in this process, each on the thread count its process has in a run. `achieved` is a
whole `python -m trainer train` run (env steps over training wall time, summary.json); SB3 runs
the same env count, rollout, minibatches and epochs (`benchmarks.peers`); the two alternate
(ours, SB3, ours, SB3, ...) for `--pairs` pairs, and the medians are compared. With
`--sample-factory PYTHON`, Sample Factory's Breakout runs third in each pair of the Atari row
(benchmarks/sample_factory.py).

    python -m benchmarks.work_floor [--rows mlp,lstm,atari] [--pairs 3] [--smoke] [--json OUT]
        [--sample-factory PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers import RESULT_PREFIX, available
from benchmarks.processes import children_reaped, failed, log, result_line, run_subprocess, set_args
from benchmarks.report import fmt, table, write_json
from benchmarks.rows import REPO_ROOT
from benchmarks.sample_factory import run_sample_factory


@dataclass(frozen=True)
class Row:
    config: str
    overrides: tuple[str, ...]
    steps: int  # env steps of one run of ours
    sb3: dict  # benchmarks.peers throughput spec, without warmup and iterations
    needs: tuple[str, ...]  # the modules the row's env needs


ROWS = {
    "mlp": Row(
        "configs/cartpole.yaml",
        ("workers.envs_per_worker=32", "workers.overlap=true"),
        409_600,
        {"policy": "mlp", "envs": 64, "rollout_steps": 128, "num_minibatches": 4, "update_epochs": 4},
        ("gymnasium",),
    ),
    "lstm": Row(
        "configs/cartpole_masked_lstm.yaml",
        ("workers.envs_per_worker=32", "workers.overlap=true"),
        163_840,
        {"policy": "lstm", "envs": 64, "rollout_steps": 128, "num_minibatches": 4, "update_epochs": 4},
        ("gymnasium",),
    ),
    "atari": Row(
        "configs/atari_breakout.yaml",
        ("workers.envs_per_worker=8",),  # no overlap, as shipped: the update has both threads
        20_480,
        {
            "policy": "atari",
            "env_id": "BreakoutNoFrameskip-v4",
            "envs": 16,
            "rollout_steps": 128,
            "num_minibatches": 4,
            "update_epochs": 4,
            "torch_threads": 2,
        },
        ("ale_py", "envpool"),
    ),
}
SMOKE_STEPS = {"mlp": 16_384, "lstm": 16_384, "atari": 4_096}


def run_overrides(row: Row, steps: int) -> list[str]:
    """The row's settings for a run of `steps` env steps, without TensorBoard or checkpoints."""
    return [*row.overrides, f"ppo.total_steps={steps}", "logging.tensorboard=false", "checkpoint.every=0"]


def config_of(row: Row, steps: int):
    from trainer.core.config import load_config

    return load_config(REPO_ROOT / row.config, run_overrides(row, steps))


def work_terms(config, repeats: int) -> dict[str, float]:
    """(a), (b) and (c) of `config`, in CPU microseconds per env step."""
    import torch

    from trainer.core.acting import Acting
    from trainer.core.envs import make_vector_env, probe_run
    from trainer.core.policy import build_policy
    from trainer.learning.learner import Learner
    from workers.rollout_worker import RolloutWorker

    if config.workers.vector_env == "async":
        raise SystemExit("the work floor times a sync or envpool vector env (its env steps run in this process)")
    probe = probe_run(config)
    E, T = config.workers.envs_per_worker, config.ppo.rollout_steps
    torch.set_num_threads(config.workers.torch_threads)
    envs = make_vector_env(
        config.env, E, mode=config.workers.vector_env, registry_spec=probe.registry_spec,
        mask_source=probe.obs_spec.mask_source,
    )  # fmt: skip
    obs, _ = envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(T * repeats)]
    start = time.process_time()
    for action in actions:
        envs.step(action)
    env_us = (time.process_time() - start) / (len(actions) * E) * 1e6
    envs.close()

    policy = build_policy(probe.obs_spec, probe.action_space, config).requires_grad_(False)
    acting, generator = Acting(policy, probe.action_space, E), torch.Generator().manual_seed(0)
    batch = probe.obs_spec.batch(obs)
    with torch.inference_mode():
        for _ in range(10):
            acting.act(batch, generator=generator)
        start = time.process_time()
        for _ in range(T * repeats):
            acting.act(batch, generator=generator)
    act_us = (time.process_time() - start) / (T * repeats * E) * 1e6

    learner = Learner(config, probe, max_policy_lag=repeats + 1)
    snapshot = learner.snapshot()
    rollouts = [RolloutWorker(config, i, probe).collect(snapshot) for i in range(config.workers.num_workers)]
    torch.set_num_threads(config.learner.torch_threads)
    learner.update(rollouts)  # warm-up: allocations, the tanh choice
    start = time.process_time()
    for _ in range(repeats):
        learner.update(rollouts)
    update_us = (time.process_time() - start) / (repeats * config.steps_per_iteration) * 1e6
    return {"env_us": env_us, "act_us": act_us, "update_us": update_us}


def run_ours(row: Row, steps: int) -> float:
    """Env steps/s of one training run (summary.json), in a process of its own."""
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = run_overrides(row, steps)
        cmd = [
            sys.executable,
            "-m",
            "trainer",
            "train",
            row.config,
            "--run-dir",
            f"{run_dir}/run",
            *set_args(overrides),
        ]
        with children_reaped():
            code, lines, _ = run_subprocess(cmd, timeout_s=1800)
        summary = Path(run_dir) / "run" / "summary.json"
        if code != 0 or not summary.exists():
            raise failed(cmd, code, lines)
        return json.loads(summary.read_text())["steps_per_s"]


def run_sb3(row: Row, steps: int) -> float:
    spec = row.sb3
    iterations = max(1, steps // (spec["envs"] * spec["rollout_steps"]) - 1)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        "throughput",
        json.dumps([{**spec, "warmup": 1, "iterations": iterations}]),
    ]
    code, lines, _ = run_subprocess(cmd, timeout_s=1800)
    if code != 0:
        raise failed(cmd, code, lines)
    return result_line(lines, RESULT_PREFIX, cmd, code)[0]["steps_per_s"]


def measure(name: str, steps: int, pairs: int, repeats: int, with_sb3: bool, sample_factory: str | None) -> dict:
    row = ROWS[name]
    config = config_of(row, steps)
    log(f"{name}: work terms ({repeats} iterations each)")
    terms = work_terms(config, repeats)
    cores = len(os.sched_getaffinity(0))
    work_us = terms["env_us"] + terms["act_us"] + terms["update_us"]
    floor = cores / work_us * 1e6
    ours, sb3, sf = [], [], []
    for pair in range(pairs):
        log(f"{name}: pair {pair + 1}/{pairs}: ours")
        ours.append(run_ours(row, steps))
        if with_sb3:
            log(f"{name}: pair {pair + 1}/{pairs}: SB3 ({ours[-1]:,.0f} steps/s)")
            sb3.append(run_sb3(row, steps))
        if sample_factory:
            log(f"{name}: pair {pair + 1}/{pairs}: Sample Factory")
            sf.append(run_sample_factory(sample_factory, steps))
    achieved = statistics.median(ours)
    sb3_median = statistics.median(sb3) if sb3 else None
    sf_median = statistics.median(sf) if sf else None
    return {
        **terms,
        "cores": cores,
        "floor_steps_per_s": floor,
        "other_us": cores / achieved * 1e6 - work_us,
        "achieved_steps_per_s": achieved,
        "achieved_to_floor": achieved / floor,
        "sb3_steps_per_s": sb3_median,
        "to_sb3": achieved / sb3_median if sb3_median else None,
        "pairs": [
            {"ours": a, "sb3": b, "ratio": a / b if b else None} for a, b in zip(ours, sb3 or [None] * len(ours))
        ],
        "sample_factory_steps_per_s": sf_median,
        "to_sample_factory": achieved / sf_median if sf_median else None,
        "sample_factory_runs": sf,
        "config": row.config,
        "overrides": list(row.overrides),
        "env_steps_per_run": steps,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(results: dict) -> str:
    headers = [
        "row",
        "env us",
        "act us",
        "update us",
        "other us",
        "floor/s",
        "ours/s",
        "of floor",
        "SB3/s",
        "vs SB3",
        "pairs",
    ]
    rows = [
        [
            name,
            f"{r['env_us']:.1f}",
            f"{r['act_us']:.1f}",
            f"{r['update_us']:.1f}",
            f"{r['other_us']:.1f}",
            f"{r['floor_steps_per_s']:,.0f}",
            f"{r['achieved_steps_per_s']:,.0f}",
            f"{r['achieved_to_floor']:.2f}",
            fmt(r["sb3_steps_per_s"]),
            fmt(r["to_sb3"], ".2f") + ("x" if r["to_sb3"] else ""),
            " ".join(fmt(p["ratio"], ".2f") for p in r["pairs"]),
        ]
        for name, r in results.items()
    ]
    text = table("Work floor (CPU per env step; floor = cores / (env + act + update))", headers, rows)
    for name, r in results.items():
        if r.get("sample_factory_steps_per_s"):
            runs = ", ".join(f"{v:,.0f}" for v in r["sample_factory_runs"])
            text += (
                f"\n{name}: Sample Factory 2.1.1 {r['sample_factory_steps_per_s']:,.0f} agent steps/s (runs {runs}); "
                f"ours {r['to_sample_factory']:.2f}x"
            )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="mlp,lstm,atari", help="comma-separated: " + ", ".join(ROWS))
    parser.add_argument("--pairs", type=int, default=3, help="alternating runs of ours and SB3 per row")
    parser.add_argument("--smoke", action="store_true", help="a few iterations per run, one pair")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--sample-factory", metavar="PYTHON", help="a Sample Factory 2.1.1 venv's python, for the atari row"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    no_sb3 = available()["stable_baselines3"]
    if no_sb3:
        log(f"{no_sb3}: the SB3 columns stay empty (pip install -e '.[bench]')")
    results, skipped = {}, {}
    for name in names:
        missing = [module for module in ROWS[name].needs if not _importable(module)]
        if missing:
            skipped[name] = f"{', '.join(missing)} not installed (pip install -e '.[bench,atari]')"
            log(f"{name}: skipped, {skipped[name]}")
            continue
        steps = SMOKE_STEPS[name] if args.smoke else ROWS[name].steps
        with_sb3 = not no_sb3 and (ROWS[name].sb3["policy"] != "lstm" or _importable("sb3_contrib"))
        sample_factory = args.sample_factory if name == "atari" else None
        pairs, repeats = (1, 1) if args.smoke else (args.pairs, 5)
        results[name] = measure(name, steps, pairs, repeats, with_sb3, sample_factory)
    print(render(results))
    for name, reason in skipped.items():
        print(f"{name}: skipped, {reason}")
    if args.json:
        import torch

        meta = {"cpu": cpu_model(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke}
        write_json(args.json, {"meta": meta, "rows": results, "skipped": skipped})
    return 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
