"""Time-to-solve rows: each seed a fresh process (`python -m trainer train`, or SB3's RL-Zoo PPO),
timed from launch to the output line that reports the solve, and to exit."""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.processes import children_reaped, failed, log, result_line, run_subprocess, set_args
from benchmarks.rows import SOLVE_CONFIG, SOLVE_ROWS, Params

PROGRESS = re.compile(r"^step (\d+)/(\d+)")


def solve_row(name: str, label: str, seeds, run_seed: Callable[[int], tuple[dict, str]]) -> dict:
    """Run each seed (run_seed returns its run and command line) and take the medians."""
    runs = []
    for seed in seeds:
        log(f"{name}: seed {seed}")
        run, command = run_seed(seed)
        runs.append(run)
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


def solve_ours_once(mode: str, seed: int, params: Params) -> tuple[dict, str]:
    """`python -m trainer train` of the solve config; solve time from its progress lines."""
    with children_reaped(wait=mode == "ray"), tempfile.TemporaryDirectory(prefix="bench-solve-") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "trainer", "train", SOLVE_CONFIG, "--run-dir", str(run_dir)]
        cmd += set_args([f"execution={mode}", f"seed={seed}", "logging.progress_interval_s=0.001"])
        cmd += set_args(params.solve_overrides)
        code, lines, run_wall = run_subprocess(cmd, timeout_s=600)
        summary_path = run_dir / "summary.json"
        if code != 0 or not summary_path.exists():
            raise failed(cmd, code, lines)
        summary = json.loads(summary_path.read_text())
    solved = summary.get("solved_at_step")
    solve_s = None
    if solved is not None:
        solve_s = next((t for t, line in lines if (m := PROGRESS.match(line)) and int(m.group(1)) == solved), None)
    run = {
        "seed": seed,
        "solved_at_step": solved,
        "time_to_solve_s": solve_s,
        "run_wall_s": run_wall,
        "train_loop_wall_s": summary["wall_time_s"],
        "env_steps": summary["env_steps"],
        "steps_per_s": summary["steps_per_s"],
        "mean_return_last20": summary["mean_return_last20"],
    }
    return run, " ".join(cmd[1:]).replace(tmp, "TMP")


def run_solve(name: str, params: Params) -> dict:
    mode = SOLVE_ROWS[name]
    label = f"ours, {mode}: {SOLVE_CONFIG} as is (2 workers x 4 envs)"
    return solve_row(name, label, params.solve_seeds, lambda seed: solve_ours_once(mode, seed, params))


def solve_sb3_once(seed: int, params: Params) -> tuple[dict, str]:
    """benchmarks.peers solve; solve time from the line it prints the moment it solves."""
    from benchmarks.peers import RESULT_PREFIX, SOLVED_PREFIX

    cmd = [sys.executable, "-m", "benchmarks.peers", "solve", "--seed", str(seed)]
    cmd += ["--max-steps", str(params.sb3_solve_max_steps)]
    code, lines, run_wall = run_subprocess(cmd, timeout_s=600)
    result = result_line(lines, RESULT_PREFIX, cmd, code)
    run = {
        "seed": seed,
        "solved_at_step": result["solved_at_step"],
        "time_to_solve_s": next((t for t, line in lines if line.startswith(SOLVED_PREFIX)), None),
        "run_wall_s": run_wall,
        "env_steps": result["env_steps"],
        "steps_per_s": result["steps_per_s"],
    }
    return run, " ".join(cmd[1:])


def run_sb3_solve(params: Params) -> dict:
    label = "SB3 PPO, RL-Zoo CartPole-v1 hyperparameters (8 envs), stops at solve"
    return solve_row("sb3-solve", label, params.solve_seeds, lambda seed: solve_sb3_once(seed, params))
