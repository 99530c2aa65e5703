"""A run killed at any moment loses at most the work since its last checkpoint: SIGKILL at random
times (checkpoint writes included) always leaves a loadable newest checkpoint, SIGTERM writes a
final one, and resumed TensorBoard curves neither repeat nor rewind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT
from trainer.runtime.checkpoint import load_checkpoint, periodic_checkpoints

# Checkpoint every iteration so kills often land during a write; tiny iterations, many of them.
FAST = [
    "--set", "execution=inline", "--set", "ppo.rollout_steps=32", "--set", "workers.envs_per_worker=2",
    "--set", "ppo.total_steps=20480", "--set", "checkpoint.every=1", "--set", "checkpoint.keep_last=2",
    "--set", "logging.progress_interval_s=0.2",
]  # fmt: skip


ATTEMPTS = 7  # runs, each SIGKILLed at a random moment unless it finished first


def start(run_dir: Path, resume: bool, *extra: str) -> subprocess.Popen:
    args = ["--resume", str(run_dir)] if resume else ["configs/cartpole.yaml", "--run-dir", str(run_dir), *FAST]
    args += extra
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", *args],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_checkpoint(run_dir: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not periodic_checkpoints(run_dir / "checkpoints"):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path):
    rng = random.Random(0)
    run_dir = tmp_path / "run"
    kills, loadable, last_step = 0, 0, -1
    for attempt in range(ATTEMPTS):
        proc = start(run_dir, resume=attempt > 0)
        if attempt == 0:
            wait_for_checkpoint(run_dir)
        time.sleep(rng.uniform(1.0, 3.0))  # start-up takes ~1.5 s; then an iteration every few ms
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        path, state = load_checkpoint(run_dir)
        loadable += 1
        assert state["env_steps"] >= last_step, "the newest checkpoint went back in time"
        last_step = state["env_steps"]
        assert path.name.startswith("iter_")
    print(f"SIGKILL loop: {kills} kills, {loadable}/{ATTEMPTS} newest checkpoints loadable")
    assert kills >= ATTEMPTS - 3
    assert loadable == ATTEMPTS
    final = start(run_dir, True, "--set", "checkpoint.every=100")  # the rest of the run, quickly
    _out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    _, state = load_checkpoint(run_dir)
    assert state["env_steps"] == 20480
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = [event.step for event in events.Scalars("perf/steps_per_s")]
    assert steps == sorted(set(steps)), "TensorBoard points repeat or rewind after resumes"
    assert steps[-1] == 20480


def test_sigterm_writes_a_final_checkpoint_and_resume_completes(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, resume=False)
    wait_for_checkpoint(run_dir)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.startswith("error: stopped by SIGTERM at env step ")
    assert f"continue with: python -m trainer train --resume {run_dir}" in err
    _path, state = load_checkpoint(run_dir)
    stopped_at = int(err.split("env step ")[1].split(";")[0])
    assert state["env_steps"] == stopped_at and stopped_at < 20480
    assert "stopped:" in out
    resumed = start(run_dir, True, "--set", "checkpoint.every=100")  # the rest of the run, quickly
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resumed at iteration {state['iteration']}, env step {stopped_at}" in out
    assert load_checkpoint(run_dir)[1]["env_steps"] == 20480
