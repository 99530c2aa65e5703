"""`python -m trainer tune` on a real embedded Ray and Ray Tune: an ASHA sweep whose trials' actors
fill the cluster exactly (so any actor outside its trial's placement group would never start),
PBT handing a restored trial a new learning rate that its optimizer then uses, and a failing trial
plus a Ctrl-C that neither lose the other trials, with --resume finishing the sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.ray

TINY = ["--set", "ppo.rollout_steps=64", "--set", "workers.envs_per_worker=4", "--set", "checkpoint.every=0"]


def tune_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", "tune", "configs/cartpole.yaml", *TINY, *args]


def run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(tune_command(*args), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_asha_sweep_under_ray_stops_weak_trials_and_its_best_config_trains(tmp_path):
    """4 trials (a grid of a good and a useless lr, times 2 samples of clip_coef), 2 at a time,
    each a learner and a worker actor; the embedded Ray has exactly the CPUs of 2 trials."""
    space = tmp_path / "space.yaml"
    space.write_text("ppo.lr: {grid: [1.0e-3, 1.0e-7]}\nppo.clip_coef: {uniform: [0.1, 0.3]}\n")
    out = tmp_path / "sweep"
    result = run(
        "--space", str(space), "--trials", "2", "--max-concurrent", "2", "--out", str(out), "--grace-steps", "4096",
        "--set", "workers.num_workers=1", "--set", "ppo.total_steps=10240", "--set", "ppo.num_minibatches=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(out)
    assert len(table) == 4
    assert {float(row["ppo.lr"]) for row in table} == {1e-3, 1e-7}
    assert all(0.1 <= float(row["ppo.clip_coef"]) <= 0.3 for row in table)
    stopped = [row for row in table if row["status"] == "stopped"]
    assert stopped and all(int(row["env_steps"]) < 10240 for row in stopped), table
    # The last useless-lr trial reaches the rung after two others recorded theirs, a good one among them.
    last = next(row for row in table if row["trial"] == "trial_00003")
    assert float(last["ppo.lr"]) == 1e-7 and last["status"] == "stopped", table
    scores = [float(row["charts/episodic_return_mean (mean of last 5)"]) for row in table]
    assert scores == sorted(scores, reverse=True)
    assert table[0]["status"] == "completed" and float(table[0]["ppo.lr"]) == 1e-3
    lines = [line for line in result.stdout.splitlines() if line.startswith("trial_")]
    assert len(lines) == 4 and sum("stopped by asha" in line for line in lines) == len(stopped), result.stdout
    for row in table:  # a run directory per trial under one logdir, each with its own curves
        steps = scalars(Path(row["run_dir"]), "charts/episodes")
        assert Path(row["run_dir"]).parent == out / "runs" and steps[-1][0] == int(row["env_steps"])
        assert json.loads((Path(row["run_dir"]) / "summary.json").read_text())["env_steps"] == int(row["env_steps"])

    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["ppo"]["lr"] == 1e-3 and best["ppo"]["clip_coef"] == float(table[0]["ppo.clip_coef"])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    trained = subprocess.run(
        [sys.executable, "-m", "trainer", "train", str(out / "best_config.yaml"), "--run-dir", str(tmp_path / "best")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "best" / "summary.json").read_text())["env_steps"] == 10240


def test_pbt_restored_trial_trains_with_its_new_learning_rate(tmp_path):
    """After an exploit, the trial resumes another trial's checkpoint (whose optimizer holds that
    trial's lr) with a perturbed lr: every update after it must use the perturbed one."""
    space = tmp_path / "space.yaml"
    space.write_text("ppo.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    out = tmp_path / "sweep"
    result = run(
        "--space", str(space), "--trials", "2", "--max-concurrent", "2", "--scheduler", "pbt", "--out", str(out),
        "--perturbation-steps", "1024", "--set", "execution=inline", "--set", "ppo.anneal_lr=false",
        "--set", "ppo.total_steps=6144",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    exploits = [json.loads(line) for line in (out / "tune" / "pbt_global.txt").read_text().splitlines()]
    assert exploits, "PBT never exploited"
    target, _, _, clone_iteration, old, new = exploits[-1]
    assert new["ppo.lr"] != old["ppo.lr"]
    run_dir = out / "runs" / f"trial_{int(target.split('_')[0]):05d}"
    later = [(step, lr) for step, lr in scalars(run_dir, "charts/learning_rate") if step > clone_iteration * 512]
    assert later, scalars(run_dir, "charts/learning_rate")
    assert all(lr == pytest.approx(new["ppo.lr"], rel=1e-6) for _, lr in later), (later, old, new)
    log = (run_dir / "train.log").read_text()
    assert f"resuming with ppo.lr {old['ppo.lr']!r} -> {new['ppo.lr']!r}" in log


def test_failing_trial_and_ctrl_c_keep_the_other_trials_and_resume_finishes(tmp_path):
    """Three trials one at a time: the first fails (its env returns NaN), the second completes,
    Ctrl-C comes during the third; --resume then runs the third and leaves the failure recorded."""
    space = tmp_path / "space.yaml"
    space.write_text("env.kwargs.nan_at_step: {grid: [5, 1000000, 1000000]}\n")
    out = tmp_path / "sweep"
    args = ["--space", str(space), "--trials", "1", "--scheduler", "fifo", "--out", str(out),
            "--set", "execution=inline", "--set", "env.id=tests.bad_envs:NaNCartPole",
            "--set", "ppo.total_steps=20480"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        tune_command(*args), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("trial_00001"):
            break
    deadline = time.monotonic() + 120
    while not (out / "runs" / "trial_00002" / "train.log").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    output = "".join(seen) + rest
    assert process.returncode == 130, output
    assert "continue it: the same command with --resume" in output
    table = {row["trial"]: row for row in rows(out)}
    assert table["trial_00000"]["status"] == "error"
    assert "EnvStepError: env 'tests.bad_envs:NaNCartPole' returned a NaN" in table["trial_00000"]["reason"]
    assert table["trial_00001"]["status"] == "completed" and table["trial_00001"]["env_steps"] == "20480"
    assert table["trial_00002"]["status"] == "unfinished"

    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    table = {row["trial"]: row for row in rows(out)}
    assert [table[t]["status"] for t in sorted(table)] == ["error", "completed", "completed"]
    assert table["trial_00002"]["env_steps"] == "20480"
    assert scalars(out / "runs" / "trial_00002", "charts/episodes")[-1][0] == 20480
