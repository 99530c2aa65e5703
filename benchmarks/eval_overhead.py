"""Iteration time with and without evaluation during training, under Ray.

The evaluation actor runs beside training: the loop only checks (without waiting) whether a
result is back. What evaluation still costs is the CPU its episodes take from workers and
learner when they share cores; the last variant's eval env waits 5 ms a step without using the
CPU, which shows the wait alone, and `eval.num_envs` batches the episodes' forward passes.
Each variant trains the same config for the same iterations;
iteration times are the `perf/iteration_s` scalars of the callback reports (the TensorBoard
values), the first iterations left out as warm-up. Variants run in turn, `--repeats` times.

    python -m benchmarks.eval_overhead [--iterations 40] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym

from benchmarks.processes import children_reaped, log
from benchmarks.report import write_json
from benchmarks.rows import REPO_ROOT

WARMUP = 3
SLEEPY = "eval.env={id: 'benchmarks.eval_overhead:SleepyCartPole', max_episode_steps: 500}"
VARIANTS = {
    "eval off": [],
    "eval.every=5": ["eval.every=5"],
    "eval.every=1": ["eval.every=1"],
    "eval.every=1, eval.num_envs=10": ["eval.every=1", "eval.num_envs=10"],
    "eval.every=1, eval env waits 5 ms a step": ["eval.every=1", SLEEPY],
}


class SleepyCartPole(gym.Wrapper):
    """CartPole whose step waits 5 ms (a remote simulator, say): wall time, no CPU."""

    def __init__(self, **kwargs) -> None:
        super().__init__(gym.make("CartPole-v1", **kwargs).unwrapped)

    def step(self, action):
        time.sleep(0.005)
        return super().step(action)


def run(overrides: list[str], iterations: int) -> dict:
    import trainer

    times, last = [], {}

    def record(report) -> None:
        times.append(report.scalars["perf/iteration_s"])
        last.update(report.scalars)

    config = REPO_ROOT / "configs/cartpole.yaml"
    steps = [f"ppo.total_steps={iterations * 2048}", "logging.tensorboard=false", "checkpoint.every=0"]
    with children_reaped():
        summary = trainer.train(config, overrides=[*steps, *overrides], callbacks=[record])
    measured = times[WARMUP:]
    return {
        "iteration_s_mean": statistics.fmean(measured),
        "iteration_s_median": statistics.median(measured),
        "iteration_s_stdev": statistics.stdev(measured),
        "skipped": last.get("eval/skipped", 0.0),
        "steps_per_s": summary["steps_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, overrides in VARIANTS.items():
            log(f"repeat {repeat + 1}/{args.repeats}: {name}")
            results[name].append(run(overrides, args.iterations))
    base = statistics.fmean(r["iteration_s_median"] for r in results["eval off"])
    print("| variant | iteration s (median) | mean +- stdev | vs eval off | skipped evals | steps/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = {}
    for name, runs in results.items():
        median = statistics.fmean(r["iteration_s_median"] for r in runs)
        mean = statistics.fmean(r["iteration_s_mean"] for r in runs)
        stdev = statistics.fmean(r["iteration_s_stdev"] for r in runs)
        rows[name] = {"runs": runs, "median": median, "ratio": median / base}
        skipped = "/".join(f"{r['skipped']:.0f}" for r in runs)
        steps = statistics.fmean(r["steps_per_s"] for r in runs)
        print(f"| {name} | {median:.3f} | {mean:.3f} +- {stdev:.3f} | {median / base:.2f}x | {skipped} | {steps:.0f} |")
    if args.json:
        write_json(Path(args.json), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
