"""The reproduce script's smoke run: one CartPole seed for 4096 steps, in a subprocess, writes a
JSON row with every key and finite numbers, and prints the table."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.conftest import REPO_ROOT

ROW_KEYS = {
    "task",
    "config",
    "steps",
    "seeds",
    "eval_mean",
    "eval_std",
    "eval_stochastic_mean",
    "eval_stochastic_std",
    "per_seed_eval",
    "references",
    "wall_time_s",
    "wall_time_s_mean",
    "steps_per_s_mean",
    "solved_at_step",
    "mean_return_last20",
}


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_reproduce_smoke(tmp_path):
    out = tmp_path / "reproduce.json"
    command = [sys.executable, "-m", "benchmarks.reproduce", "configs/cartpole.yaml", "--seeds", "1"]
    command += ["--steps", "4096", "--execution", "inline", "--out", str(tmp_path / "runs"), "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    [row] = data["rows"]
    assert ROW_KEYS <= row.keys()
    assert row["task"] == "CartPole-v1" and row["config"] == "cartpole"
    assert row["steps"] == 4096 and row["seeds"] == 1
    for key in ("eval_mean", "eval_std", "eval_stochastic_mean", "eval_stochastic_std", "wall_time_s_mean"):
        assert finite(row[key]), (key, row[key])
    assert row["eval_mean"] > 0 and row["wall_time_s_mean"] > 0 and row["steps_per_s_mean"] > 0
    assert len(row["per_seed_eval"]) == 1 and all(finite(v) for v in row["per_seed_eval"])
    assert {ref["steps"] for ref in row["references"]} == {100_000, 500_000}
    [run] = data["runs"]
    assert run["seed"] == 1 and str(tmp_path / "runs") in run["run_dir"]
    assert "CartPole-v1" in proc.stdout and "+-" in proc.stdout


def test_reproduce_refuses_a_bad_override_before_training(tmp_path):
    command = [sys.executable, "-m", "benchmarks.reproduce", "configs/cartpole.yaml", "--steps", "0"]
    command += ["--out", str(tmp_path / "runs")]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: invalid config (configs/cartpole.yaml): ppo.total_steps: Input should be greater than 0 (got 0)"
    ]
    assert not (tmp_path / "runs").exists()  # nothing trained, no run directory
