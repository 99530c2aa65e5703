"""`python -m trainer tune` on a real embedded Ray and Ray Tune: an ASHA sweep whose trials' actors
fill the cluster exactly (so any actor outside its trial's placement group would never start),
PBT handing a restored trial a new learning rate that its optimizer then uses, a failing trial
plus a Ctrl-C that neither lose the other trials, with --resume finishing the sweep, a sweep whose
every trial fails (exit 2, each error in its line), and a draw the config refuses failing only its
own trial, while the trials report exactly the tags that --metric is checked against."""

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
from trainer.core.config import load_config
from trainer.sweep.tags import trial_tags

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


def reported_tags(out: Path, values: dict) -> set[str]:
    """The TensorBoard tags a trial (the one with these sampled values) reported to Tune."""
    trial_dir = next(p.parent for p in (out / "tune").glob("*/params.json") if json.loads(p.read_text()) == values)
    lines = (trial_dir / "result.json").read_text().splitlines()
    return {key for line in lines for key in json.loads(line) if "/" in key}


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
    every, some = trial_tags(load_config("configs/cartpole.yaml", [*TINY[1::2], "workers.num_workers=1"]))
    for row in table:  # exactly the tags --metric is checked against (a GPU's only where there is one)
        values = {"ppo.lr": float(row["ppo.lr"]), "ppo.clip_coef": float(row["ppo.clip_coef"])}
        assert every - {"perf/learner_gpu_memory_mb"} <= reported_tags(out, values) <= every | some
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
            "--set", "execution=inline", "--set", "env.id=tests.envs.bad:NaNCartPole",
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
    assert "EnvStepError: env 'tests.envs.bad:NaNCartPole' returned a NaN" in table["trial_00000"]["reason"]
    assert table["trial_00001"]["status"] == "completed" and table["trial_00001"]["env_steps"] == "20480"
    assert table["trial_00002"]["status"] == "unfinished"

    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    table = {row["trial"]: row for row in rows(out)}
    assert [table[t]["status"] for t in sorted(table)] == ["error", "completed", "completed"]
    assert table["trial_00002"]["env_steps"] == "20480"
    assert scalars(out / "runs" / "trial_00002", "charts/episodes")[-1][0] == 20480


def test_sweep_whose_every_trial_fails_gives_each_error_and_exits_2(tmp_path):
    """Each trial's line gives its error; the sweep ends in one error line naming the first
    failure and results.csv, and exits 2 (no trial to take a config from)."""
    space = tmp_path / "space.yaml"
    space.write_text("env.kwargs.nan_at_step: {grid: [5, 6]}\n")
    out = tmp_path / "sweep"
    result = run("--space", str(space), "--trials", "1", "--scheduler", "fifo", "--out", str(out),
                 "--set", "execution=inline", "--set", "env.id=tests.envs.bad:NaNCartPole")  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    nan = "EnvStepError: env 'tests.envs.bad:NaNCartPole' returned a NaN or inf observation or reward (worker 0"
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("trial_"))
    assert len(lines) == 2 and all(f"steps, failed: {nan}" in line for line in lines), result.stdout
    assert result.stderr.startswith(f"error: no trial completed (2 failed); the first error, trial_00000: {nan}")
    assert result.stderr.endswith(f"; every trial's status and reason: {out / 'results.csv'}\n"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stdout + result.stderr
    assert [row["status"] for row in rows(out)] == ["error", "error"]
    assert all(row["reason"].startswith(nan) for row in rows(out)) and not (out / "best_config.yaml").exists()


def test_refused_draw_of_a_wide_randint_fails_only_its_trial_and_no_leftover_blocks_a_start(tmp_path):
    """rollout_steps randint [1024, 2048] is too wide to check each integer before the sweep, and
    with num_minibatches 1024 the config refuses all but its ends: that trial fails with a line
    naming the values, their samplers and the space file, the other completes. A tune/ without
    Tune's trial state (what a refused draw used to leave, stopping the sweep) blocks no start."""
    space = tmp_path / "space.yaml"
    space.write_text("ppo.num_minibatches: {grid: [1, 1024]}\nppo.rollout_steps: {randint: [1024, 2048]}\n")
    out = tmp_path / "sweep"
    (out / "tune").mkdir(parents=True)
    (out / "tune" / "tuner.pkl").write_bytes(b"from a start that stopped before its first trial")
    settings = ["execution=inline", "workers.num_workers=1", "workers.envs_per_worker=1", "ppo.rollout_steps=1024",
                "ppo.total_steps=1", "eval.every=1", "eval.episodes=2", "learner.device=cpu"]  # fmt: skip
    args = ["--space", str(space), "--trials", "1", "--scheduler", "fifo", "--out", str(out)]
    args += [arg for setting in settings for arg in ("--set", setting)]
    resumed = run(*args, "--resume")
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    nothing = "holds no sweep to resume (no trial state in tune/); start it without --resume"
    assert resumed.stderr == f"error: {out} {nothing}\n"

    result = run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    table = {row["ppo.num_minibatches"]: row for row in rows(out)}
    assert table["1"]["status"] == "completed", table
    steps = int(table["1024"]["ppo.rollout_steps"])
    if steps not in (1024, 2048):  # both ends are taken, and drawn once in 512 sweeps
        refused = (
            f"SpaceError: {space}: the trial's ppo.num_minibatches=1024 (grid [1, 1024]), ppo.rollout_steps={steps} "
            f"(randint [1024, 2048]) give an invalid config: ppo.num_minibatches (1024) must divide the {steps} samples"
        )
        assert table["1024"]["status"] == "error" and table["1024"]["reason"].startswith(refused), table
        assert f"failed: {refused}" in result.stdout, result.stdout
    # What a trial reports is what --metric was checked against: evaluation and episode tags too.
    every, some = trial_tags(load_config("configs/cartpole.yaml", [*TINY[1::2], *settings]))
    completed = {"ppo.num_minibatches": 1, "ppo.rollout_steps": int(table["1"]["ppo.rollout_steps"])}
    assert reported_tags(out, completed) == every | some
