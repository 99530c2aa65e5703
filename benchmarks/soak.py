"""Soak: a long Ray run through the CLI while rollout workers and the learner are killed.

    python -m benchmarks.soak --minutes 22 [--worker-every-s 120] [--learner-kills 2] [--set key=value ...]

Trains `configs/cartpole.yaml` (embedded Ray, 2 workers) with an endless step budget, SIGKILLs a
random rollout worker's process every `--worker-every-s` and the learner's at evenly spaced
moments, samples the resident memory of the driver, workers, learner, raylet, GCS and Ray's other
processes each 30 s (from minute 2, after warm-up), and after
`--minutes` stops the run with SIGTERM (final checkpoint). It then resumes the run for two more
iterations with the same command, so the run ends at the step count it asked for. Checked and
printed: every step trained once (TensorBoard steps are each iteration's exactly once, the
learner's version and Adam step count match the iterations), restarts as counted, and memory
at the start, end and peak. Prints one line `RESULT {json}` last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.processes import process_tree

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "


def actor_processes(driver: psutil.Process, name: str) -> list[psutil.Process]:
    found = []
    for proc in process_tree(driver):
        try:
            if f"ray::{name}" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def process_kind(proc: psutil.Process, driver: psutil.Process) -> str:
    if proc.pid == driver.pid:
        return "driver"
    command = " ".join(proc.cmdline())
    for kind in ("RolloutHostActor", "LearnerActor", "raylet", "gcs_server"):
        if kind in command:
            return kind
    return "other ray"


def rss_by_kind_mib(driver: psutil.Process) -> dict[str, float]:
    """Resident memory (MiB) of the driver, the workers, the learner, raylet, GCS and the rest."""
    memory: dict[str, float] = {}
    for proc in process_tree(driver):
        try:
            kind = process_kind(proc, driver)
            memory[kind] = memory.get(kind, 0.0) + proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return {kind: round(value, 1) for kind, value in sorted(memory.items())}


def read_lines(stream, into: list[str]) -> threading.Thread:
    def run() -> None:
        for line in stream:
            into.append(line.rstrip("\n"))
            print(line, end="", flush=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def start_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", *args], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def soak(minutes: float, worker_every_s: float, learner_kills: int, overrides: list[str]) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="soak-")) / "run"
    sets = [
        arg
        for item in ["logging.progress_interval_s=30", "checkpoint.every=100", *overrides]
        for arg in ("--set", item)
    ]
    command = ["configs/cartpole.yaml", "--run-dir", str(run_dir), "--resume", "auto", *sets]
    lines: list[str] = []
    proc = start_cli([*command, "--set", "ppo.total_steps=1000000000000"])
    reader = read_lines(proc.stdout, lines)
    driver = psutil.Process(proc.pid)
    start = time.monotonic()
    end = start + minutes * 60
    learner_at = [start + minutes * 60 * (i + 1) / (learner_kills + 1) for i in range(learner_kills)]
    next_worker, next_sample = start + worker_every_s, start + 120.0  # memory from after warm-up
    memory: list[tuple[float, float, int]] = []
    kills = {"workers": 0, "learner": 0}
    rng = random.Random(0)
    while time.monotonic() < end and proc.poll() is None:
        now = time.monotonic()
        if now >= next_worker:
            workers = actor_processes(driver, "RolloutHostActor")
            if workers:
                rng.choice(workers).send_signal(signal.SIGKILL)
                kills["workers"] += 1
            next_worker += worker_every_s
        if learner_at and now >= learner_at[0]:
            for learner in actor_processes(driver, "LearnerActor"):
                learner.send_signal(signal.SIGKILL)
                kills["learner"] += 1
            learner_at.pop(0)
        if now >= next_sample:
            memory.append((round(now - start, 1), rss_by_kind_mib(driver)))
            next_sample += 30.0
        time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit(f"the run ended early with exit code {proc.returncode}:\n" + "\n".join(lines[-30:]))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    reader.join(timeout=10)
    soak_wall = time.monotonic() - start
    stopped = json.loads((run_dir / "summary.json").read_text())
    steps_per_iteration = stopped["env_steps"] // stopped["iterations"]
    total = stopped["env_steps"] + 2 * steps_per_iteration

    finish_lines: list[str] = []
    finisher = start_cli([*command, "--set", f"ppo.total_steps={total}"])
    finish_reader = read_lines(finisher.stdout, finish_lines)
    finisher.wait(timeout=600)
    finish_reader.join(timeout=10)
    return check(run_dir, total, steps_per_iteration, lines + finish_lines, kills, memory, soak_wall, finisher)


def check(run_dir, total, steps_per_iteration, lines, kills, memory, soak_wall, finisher) -> dict:
    import torch  # noqa: F401  (checkpoint reading)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.core.config import load_config
    from trainer.runtime.checkpoint import load_checkpoint

    summary = json.loads((run_dir / "summary.json").read_text())
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    steps = [event.step for event in events.Scalars("perf/steps_per_s")]
    expected = list(range(steps_per_iteration, total + 1, steps_per_iteration))
    state = load_checkpoint(run_dir)[1]
    learner = state["runtime"]["learner"]
    config = load_config(state["config"])
    adam = {int(s["step"]) for s in learner["optimizer"]["state"].values()}
    iterations = total // steps_per_iteration
    rss = [round(sum(m[1].values()), 1) for m in memory]
    first, last = (memory[0][1], memory[-1][1]) if memory else ({}, {})
    return {
        "soak_wall_s": round(soak_wall, 1),
        "finished": finisher.returncode == 0,
        "env_steps": summary["env_steps"],
        "requested_steps": total,
        "iterations": summary["iterations"],
        "tensorboard_steps_exact": steps == expected,
        "tensorboard_repeated": len(steps) - len(set(steps)),
        "tensorboard_missing": len(set(expected) - set(steps)),
        "learner_version_matches": learner["version"] == iterations,
        "adam_steps_match": adam == {iterations * config.ppo.update_epochs * config.ppo.num_minibatches},
        "workers_killed": kills["workers"],
        "worker_restarts": summary["worker_restarts"],
        "learner_killed": kills["learner"],
        "learner_restarts": summary["learner_restarts"],
        "replacement_lines": sum("replacing it" in line for line in lines),
        "learner_rebuild_lines": sum("rebuilding it from" in line for line in lines),
        "memory_mib_first": rss[0] if rss else None,
        "memory_mib_last": rss[-1] if rss else None,
        "memory_mib_max": max(rss) if rss else None,
        "memory_mib_by_process_first": first,
        "memory_mib_by_process_last": last,
        "memory_samples": memory,
        "run_dir": str(run_dir),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=22.0)
    parser.add_argument("--worker-every-s", type=float, default=120.0)
    parser.add_argument("--learner-kills", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    result = soak(args.minutes, args.worker_every_s, args.learner_kills, args.overrides)
    print(RESULT_PREFIX + json.dumps(result))


if __name__ == "__main__":
    main()
