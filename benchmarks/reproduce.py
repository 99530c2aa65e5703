"""Reproduce published PPO results: train each config for S seeds, evaluate the final policy with
the saved normalizer, and print (and optionally write) a table against the published numbers.

    python -m benchmarks.reproduce configs/cartpole.yaml configs/acrobot.yaml --seeds 3 \
        --execution inline --json runs/reproduce.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from trainer.core.config import load_config
from trainer.core.errors import UserError

# Published PPO results by env id: (source, env steps, mean return). RL Zoo numbers are its
# benchmark.md (one trained agent each; LunarLander rows are for v2).
REFERENCES: dict[str, list[tuple[str, int, float]]] = {
    "CartPole-v1": [("CleanRL ppo.py", 500_000, 490.0), ("RL Zoo PPO", 100_000, 500.0)],
    "Acrobot-v1": [("CleanRL ppo.py", 500_000, -86.0)],
    "Pendulum-v1": [("RL Zoo PPO", 100_000, -172.2)],
    "LunarLander-v3": [("RL Zoo PPO (v2)", 1_000_000, 242.1)],
    "LunarLanderContinuous-v3": [("RL Zoo PPO (v2)", 1_000_000, 270.9)],
    "HalfCheetah-v5": [("CleanRL ppo_continuous_action.py (v4)", 1_000_000, 1443.0)],
    "Hopper-v5": [("CleanRL ppo_continuous_action.py (v4)", 1_000_000, 2383.0)],
}

COLUMNS = ("task", "config", "steps", "seeds", "ours", "ours_stochastic", "reference", "wall_s_per_run", "solved_at")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="config YAML files")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..S per config")
    parser.add_argument("--steps", type=int, default=None, help="override ppo.total_steps")
    parser.add_argument("--execution", choices=("inline", "ray"), default="inline")
    parser.add_argument("--out", default="runs/reproduce", help="parent of the run directories")
    parser.add_argument("--json", default=None, help="write rows and per-run results here")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per seed")
    parser.add_argument("--no-stochastic", action="store_true", help="skip the stochastic evaluation")
    return parser.parse_args(argv)


def common_overrides(args: argparse.Namespace) -> list[str]:
    steps = [f"ppo.total_steps={args.steps}"] if args.steps is not None else []
    return [f"execution={args.execution}", *steps]


def run_seed(config_path: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one seed in a fresh run directory and evaluate its final checkpoint."""
    from trainer.evaluate import evaluate
    from trainer.runtime.session import train

    overrides = [f"seed={seed}", *common_overrides(args)]
    name = Path(config_path).stem
    run_dir = Path(args.out) / f"{name}__seed{seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    summary = train(config_path, overrides, run_dir=run_dir)
    result = {"config": name, "seed": seed, "run_dir": str(run_dir), "summary": summary}
    result["eval"] = evaluate(run_dir, episodes=args.episodes, deterministic=True)["mean_return"]
    if not args.no_stochastic:
        result["eval_stochastic"] = evaluate(run_dir, episodes=args.episodes, deterministic=False)["mean_return"]
    return result


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def reference_text(env_id: str) -> str:
    refs = REFERENCES.get(env_id, [])
    return "; ".join(f"{value:g} @ {steps // 1000}k ({source})" for source, steps, value in refs) or "-"


def make_row(config_path: str, runs: list[dict]) -> dict:
    """Aggregate one config's seeds: mean +- std over seeds of the per-seed eval means."""
    summaries = [run["summary"] for run in runs]
    env_id = summaries[0]["env_id"]
    ours, ours_std = mean_std([run["eval"] for run in runs])
    stoch, stoch_std = mean_std([run["eval_stochastic"] for run in runs if "eval_stochastic" in run])
    return {
        "task": env_id,
        "config": Path(config_path).stem,
        "steps": summaries[0]["env_steps"],
        "seeds": len(runs),
        "eval_mean": ours,
        "eval_std": ours_std,
        "eval_stochastic_mean": stoch,
        "eval_stochastic_std": stoch_std,
        "per_seed_eval": [run["eval"] for run in runs],
        "references": [{"source": s, "steps": n, "return": v} for s, n, v in REFERENCES.get(env_id, [])],
        "wall_time_s": [s["wall_time_s"] for s in summaries],
        "wall_time_s_mean": statistics.fmean(s["wall_time_s"] for s in summaries),
        "steps_per_s_mean": statistics.fmean(s["steps_per_s"] for s in summaries),
        "solved_at_step": [s["solved_at_step"] for s in summaries],
        "mean_return_last20": [s["mean_return_last20"] for s in summaries],
    }


def format_row(row: dict) -> tuple[str, ...]:
    solved = ",".join("-" if s is None else f"{s // 1000}k" for s in row["solved_at_step"])
    return (
        row["task"],
        row["config"],
        f"{row['steps'] // 1000}k",
        str(row["seeds"]),
        f"{row['eval_mean']:.1f} +- {row['eval_std']:.1f}",
        f"{row['eval_stochastic_mean']:.1f} +- {row['eval_stochastic_std']:.1f}",
        reference_text(row["task"]),
        f"{row['wall_time_s_mean']:.0f}",
        solved,
    )


def print_table(rows: list[dict]) -> None:
    cells = [COLUMNS, *(format_row(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    for line in cells:
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)))


def write_json(path: str, rows: list[dict], runs: list[dict], args: argparse.Namespace) -> None:
    meta = {"seeds": args.seeds, "steps": args.steps, "execution": args.execution, "episodes": args.episodes}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # a bad config (or --steps) fails in one line before any training starts
        for config_path in args.configs:
            load_config(config_path, common_overrides(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    rows, all_runs = [], []
    for config_path in args.configs:
        runs = [run_seed(config_path, seed, args) for seed in range(1, args.seeds + 1)]
        all_runs.extend(runs)
        rows.append(make_row(config_path, runs))
        if args.json:  # after every config, so a long sweep keeps what it has
            write_json(args.json, rows, all_runs, args)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
