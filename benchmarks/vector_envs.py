"""One rollout worker stepping its envs with `workers.vector_env: sync` against `async`.

Sync steps the E envs one after another in the worker; async steps each in a subprocess, all
at once, and the worker waits for the slowest. Each row is one worker, in this process (no Ray,
so it is the vector env alone that differs): its rollouts' env steps per second (after one
warm-up rollout) and the CPU seconds the worker and its env subprocesses use per 1,000 env
steps. On the latency-bound env (every step waits without using the CPU) async can take E
steps in the time of one; on Atari, whose step is CPU, it can at most use the cores there are.

    python -m benchmarks.vector_envs [--envs 4,16] [--rollouts 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.processes import cpu_s
from benchmarks.report import fmt, table, write_json
from benchmarks.rows import REPO_ROOT

ENVS = {
    "latency env, 10 ms a step": {"env": {"id": "benchmarks.latency_env:LatencyEnv", "kwargs": {"step_s": 0.01}}},
    "Atari Breakout (configs/atari_breakout.yaml)": REPO_ROOT / "configs/atari_breakout.yaml",
}
T = 64


def worker_cpu_s(worker) -> float:
    """CPU seconds of this process and of its env subprocesses (an async vector env's)."""
    import psutil

    return time.process_time() + sum(cpu_s(psutil.Process(p.pid)) for p in getattr(worker.envs, "processes", []))


def measure(source, vector_env: str, envs: int, rollouts: int) -> dict:
    from trainer.core.config import load_config
    from trainer.core.envs import probe_run
    from trainer.learning.learner import Learner
    from workers.rollout_worker import RolloutWorker

    overrides = ["execution=inline", f"workers.envs_per_worker={envs}", f"workers.vector_env={vector_env}"]
    config = load_config(source, [*overrides, f"ppo.rollout_steps={T}", "ppo.num_minibatches=1"])
    probe = probe_run(config)
    snapshot = Learner(config, probe).snapshot()
    started = time.perf_counter()
    worker = RolloutWorker(config, 0, probe)
    build_s = time.perf_counter() - started
    try:
        worker.collect(snapshot)
        cpu, wall = worker_cpu_s(worker), time.perf_counter()
        for _ in range(rollouts):
            worker.collect(snapshot)
        cpu, wall = worker_cpu_s(worker) - cpu, time.perf_counter() - wall
    finally:
        worker.close()
    steps = rollouts * T * envs
    return {"steps_per_s": steps / wall, "cpu_s_per_1k_steps": 1000 * cpu / steps, "build_s": build_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="4,16", help="envs per worker, comma-separated")
    parser.add_argument("--rollouts", type=int, default=3)
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args(argv)
    results, rows = [], []
    for name, source in ENVS.items():
        for envs in (int(n) for n in args.envs.split(",")):
            sync = measure(source, "sync", envs, args.rollouts)
            asynchronous = measure(source, "async", envs, args.rollouts)
            results.append({"env": name, "envs": envs, "sync": sync, "async": asynchronous})
            rows.append([
                name, str(envs), fmt(sync["steps_per_s"]), fmt(asynchronous["steps_per_s"]),
                f"{asynchronous['steps_per_s'] / sync['steps_per_s']:.2f}x",
                fmt(sync["cpu_s_per_1k_steps"], ".2f"), fmt(asynchronous["cpu_s_per_1k_steps"], ".2f"),
                fmt(sync["build_s"], ".1f"), fmt(asynchronous["build_s"], ".1f"),
            ])  # fmt: skip
    headers = [
        "env", "envs", "sync steps/s", "async steps/s", "async / sync", "sync CPU s per 1k steps",
        "async CPU s per 1k steps", "sync build s", "async build s",
    ]  # fmt: skip
    print(table("One worker: sync against async vector envs", headers, rows, right=set(range(1, len(headers)))))
    if args.json:
        write_json(Path(args.json), {"rows": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
