"""Atari Breakout throughput in one run: the env-only limit (the config's own preprocessed vector
env stepping random actions), this trainer in-process, on Ray with 2 workers and with overlap,
and SB3 PPO CnnPolicy with the same envs count, rollout size and torch threads as our learner.
Prints env steps/s and frames/s (4 frames a step), the ratios to the limit and to SB3, each
row's iteration breakdown and the peak RSS of every process; `--json` writes it all.

    python -m benchmarks.atari [--envs-per-worker 8] [--iterations 3] [--smoke] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from benchmarks.limit import measure_limit
from benchmarks.peers import available
from benchmarks.processes import children_reaped, log, result_line, run_subprocess
from benchmarks.rows import REPO_ROOT
from benchmarks.throughput import Timing, time_iterations

CONFIG = "configs/atari_breakout.yaml"
SB3_ENV = "BreakoutNoFrameskip-v4"  # the same game, frameskip 1, no sticky actions
FRAME_SKIP = 4
PHASES = ("perf/collect_s", "perf/transfer_s", "perf/copy_s", "perf/learn_s")  # the TensorBoard tags


def peak_rss_mb(_=None) -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config_for(execution: str, overlap: bool, envs: int, rollout_steps: int, iterations: int):
    from trainer.core.config import load_config

    overrides = [
        f"execution={execution}",
        f"workers.overlap={overlap}",
        "workers.num_workers=2",
        f"workers.envs_per_worker={envs}",
        f"ppo.rollout_steps={rollout_steps}",
        "logging.tensorboard=false",
        "logging.progress_interval_s=1000",
    ]
    config = load_config(REPO_ROOT / CONFIG, overrides)
    return load_config(config, [f"ppo.total_steps={iterations * config.steps_per_iteration}"])


def run_ours(execution: str, overlap: bool, envs: int, rollout_steps: int, iterations: int) -> dict:
    import ray

    from trainer.core.envs import probe_run
    from trainer.runtime.inline import InlineRuntime
    from trainer.runtime.ray_runtime import RayRuntime

    config = config_for(execution, overlap, envs, rollout_steps, iterations + 1)
    probe = probe_run(config)
    with children_reaped(wait=execution == "ray"):
        timing = Timing(created=time.perf_counter())
        runtime = RayRuntime(config, probe, log=log) if execution == "ray" else InlineRuntime(config, probe)
        try:
            time_iterations(runtime, timing, 1, iterations)
            memory = {"driver": peak_rss_mb()}
            if execution == "ray":
                memory["learner"] = ray.get(runtime.learner.actor.__ray_call__.remote(peak_rss_mb))
                for index, host in enumerate(runtime.hosts):
                    memory[f"worker {index}"] = ray.get(host.__ray_call__.remote(peak_rss_mb))
        finally:
            runtime.close()
    steps = iterations * config.steps_per_iteration
    wall = timing.end - timing.start
    phases = {name: sum(i.get(name, 0.0) for i in timing.iterations) / iterations for name in PHASES}
    return {
        "label": f"{execution}, 2 workers x {envs} envs" + (", overlap" if overlap else ""),
        "env_steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        "iteration_s": wall / iterations,
        "phases_s": phases,
        "worker_env_s": [sum(i["worker_env_s"][w] for i in timing.iterations) / iterations for w in range(2)],
        "worker_forward_s": [sum(i["worker_forward_s"][w] for i in timing.iterations) / iterations for w in range(2)],
        "peak_rss_mb": memory,
    }


def run_sb3(envs: int, rollout_steps: int, iterations: int) -> dict:
    from benchmarks.peers import RESULT_PREFIX

    log("sb3")
    config = config_for("inline", False, envs, rollout_steps, 1)
    spec = {
        "policy": "atari",
        "env_id": SB3_ENV,
        "envs": 2 * envs,
        "rollout_steps": rollout_steps,
        "num_minibatches": config.ppo.num_minibatches,
        "update_epochs": config.ppo.update_epochs,
        "warmup": 1,
        "iterations": iterations,
        "torch_threads": config.learner.torch_threads,
    }
    cmd = [sys.executable, "-m", "benchmarks.peers", "throughput", json.dumps([spec])]
    code, lines, _ = run_subprocess(cmd, timeout_s=1200)
    return result_line(lines, RESULT_PREFIX, cmd, code)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs-per-worker", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3, help="measured iterations per row, after one warm-up")
    parser.add_argument("--smoke", action="store_true", help="tiny rollouts, one iteration: checks it runs")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    envs, T, iterations = args.envs_per_worker, 128, args.iterations
    if args.smoke:
        envs, T, iterations = 2, 16, 1
    env_config = config_for("inline", False, envs, T, 1).env
    log("limit: 2 processes, one vector env each")
    limit = measure_limit(env_config, procs=2, vecs_per_proc=1, envs=envs, steps=max(50, 8 * T))
    rows = {}
    for name, execution, overlap in (("inline", "inline", False), ("ray2", "ray", False), ("ray2o", "ray", True)):
        log(f"{name}: {iterations} iterations of {2 * envs} envs x {T} steps")
        rows[name] = run_ours(execution, overlap, envs, T, iterations)
    missing = available()["stable_baselines3"]
    sb3 = {"skipped": f"{missing}: pip install -e '.[bench]'"} if missing else run_sb3(envs, T, iterations)
    report(limit, rows, sb3)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"limit": limit, "ours": rows, "sb3": sb3}, f, indent=2)
    return 0


def report(limit: dict, rows: dict, sb3: dict) -> None:
    """The table; without SB3 its row says why and the vs-SB3 cells stay empty."""
    sb3_rate = sb3.get("steps_per_s")
    print(f"Atari Breakout ({CONFIG}), {FRAME_SKIP} frames per env step")
    print("| setup | steps/s | frames/s | of limit | vs SB3 | iteration s | collect | update | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    print(f"| env only (limit), 2 processes | {limit['steps_per_s']:,.0f} | {limit['steps_per_s'] * FRAME_SKIP:,.0f} "
          "| 100% | | | | | |")  # fmt: skip
    for row in rows.values():
        rss = ", ".join(f"{k} {v:,.0f}" for k, v in row["peak_rss_mb"].items())
        phases = row["phases_s"]
        vs_sb3 = f"{row['steps_per_s'] / sb3_rate:.2f}x" if sb3_rate else ""
        print(
            f"| {row['label']} | {row['steps_per_s']:,.0f} | {row['steps_per_s'] * FRAME_SKIP:,.0f} "
            f"| {row['steps_per_s'] / limit['steps_per_s']:.1%} | {vs_sb3} "
            f"| {row['iteration_s']:.2f} | {phases['perf/collect_s']:.2f} | {phases['perf/learn_s']:.2f} | {rss} |"
        )
    if not sb3_rate:
        print(f"| SB3 PPO CnnPolicy: {sb3['skipped']} | | | | | | | | |")
        return
    print(f"| {sb3['setup']} | {sb3_rate:,.0f} | {sb3_rate * FRAME_SKIP:,.0f} "
          f"| {sb3_rate / limit['steps_per_s']:.1%} | 1.00x | | | | |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
