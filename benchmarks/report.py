"""The benchmark's output: the plain-text tables printed at the end and the strict JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.rows import LIMIT_ROWS, OURS, SB3_ROWS, SOLVE_ROWS, SOLVE_THRESHOLD

SOLVE_NAMES = [*SOLVE_ROWS, "sb3-solve"]


def fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def table(title: str, headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(
            (str(c).rjust(w) if i in right else str(c).ljust(w)) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(headers))
    return "\n".join([title, rule, line(headers), rule, *(line(r) for r in rows), rule])


def table_rows(names: list[str], results: dict, skipped: dict, cells, width: int) -> list[list[str]]:
    """cells(row) for each name that ran, a `skipped: reason` line for each that was skipped."""
    rows = []
    for name in names:
        if name in results:
            rows.append([name, *cells(results[name])])
        elif name in skipped:
            rows.append([name, f"skipped: {skipped[name]}", *[""] * (width - 2)])
    return rows


def header(results: dict, meta: dict) -> list[str]:
    load = meta["foreign_cpu_load"]
    out = [
        f"Benchmark ({'smoke' if meta['smoke'] else 'full'}) on {meta['machine']}; "
        f"{meta['cpu_count']} CPU cores; torch {meta['torch']}; total {meta['total_wall_s']:.0f} s; "
        f"CPU used by other processes: mean {load['mean_cores']:.2f} cores, max {load['max_cores']:.2f}",
        "busy: mean CPU cores used by processes outside this benchmark while the row ran (0 is a clean measurement).",
    ]
    restarted = [name for name, r in results.items() if r.get("worker_restarts")]
    if restarted:
        out.append(
            f"WARNING: rollout workers died and were replaced during {', '.join(restarted)}; those rows are skewed."
        )
    if load["mean_cores"] > 0.2:
        out.append("WARNING: other processes used this machine's CPU during the run; rows with busy > 0.1 are skewed.")
    return out


def throughput_table(results: dict, skipped: dict) -> list[str]:
    def cells(r):
        return [
            r["label"],
            fmt(r.get("env_steps")),
            fmt(r["steps_per_s"]),
            fmt(r.get("limit_steps_per_s")),
            fmt(r.get("ratio_to_limit"), ".1%"),
            fmt(r.get("sb3_steps_per_s")),
            fmt(r.get("ratio_to_sb3"), ".2f"),
            fmt(r.get("foreign_cpu_cores"), ".2f"),
        ]

    headers = ["row", "setup", "steps", "steps/s", "limit", "ours/limit", "SB3 same envs", "ours/SB3", "busy"]
    rows = table_rows([*OURS, *SB3_ROWS], results, skipped, cells, len(headers))
    title = (
        "Throughput: env steps/s after warm-up (ours: InlineRuntime/RayRuntime.iterate(); limit: same vector "
        "env, random actions, one process per worker core)"
    )
    return [table(title, headers, rows, right={2, 3, 4, 5, 6, 7, 8})] if rows else []


def limits_table(results: dict) -> list[str]:
    rows = [
        [name, r["label"], fmt(r["steps_per_s"]), fmt(r.get("foreign_cpu_cores"), ".2f")]
        for name in LIMIT_ROWS
        if (r := results.get(name)) is not None
    ]
    title = "Limits: env steps/s (sum over processes)"
    return [table(title, ["row", "setup", "steps/s", "busy"], rows, right={2, 3})] if rows else []


def solve_table(results: dict, skipped: dict) -> list[str]:
    def cells(r):
        per_seed = ", ".join(
            f"s{x['seed']}:{fmt(x['solved_at_step'], 'd', 'no')}@{fmt(x['time_to_solve_s'], '.1f', '-')}s"
            for x in r["runs"]
        )
        return [
            r["seeds_solved"],
            fmt(r["median_solved_at_step"]),
            fmt(r["median_time_to_solve_s"], ".1f"),
            fmt(r["median_run_wall_s"], ".1f"),
            fmt(r["steps_per_s"]),
            fmt(r.get("foreign_cpu_cores"), ".2f"),
            per_seed,
        ]

    headers = ["row", "solved", "median steps", "median s to solve", "median run wall s", "steps/s", "busy", "per seed"]
    rows = table_rows(SOLVE_NAMES, results, skipped, cells, len(headers))
    if not rows:
        return []
    threshold = f"{SOLVE_THRESHOLD:.0f}"
    title = (
        f"Time to solve CartPole-v1 (last-20 mean >= {threshold}), each seed a fresh process; time from launch "
        "(imports, Ray start-up included)"
    )
    notes = [f"  {name}: {results[name]['label']}" for name in SOLVE_NAMES if name in results]
    notes += [
        f"  s to solve: launch -> the progress line of the iteration whose last-20 mean first reached {threshold} "
        "(ours checks once per iteration = 1024 steps; SB3 after every vector step and stops there).",
        "  run wall: launch -> exit; ours trains the config's whole ppo.total_steps. steps/s: ours = summary.json "
        "(train loop), SB3 = learn() rate.",
    ]
    return [table(title, headers, rows, right={2, 3, 4, 5, 6}), "\n".join(notes)]


def memory_table(results: dict) -> list[str]:
    if "memory" not in results:
        return []
    r = results["memory"]
    first, last = r["probes"]
    rows = [
        [
            p["process"],
            *(fmt(p[at][key], ".1f") for at in ("at_first", "at_last") for key in ("rss_mib", "peak_rss_mib")),
            fmt(p["rss_growth_pct"], "+.1f"),
            fmt(p["peak_growth_pct"], "+.1f"),
        ]
        for p in r["processes"]
    ]
    headers = [
        "process",
        f"RSS@{first}",
        f"peak@{first}",
        f"RSS@{last}",
        f"peak@{last}",
        "RSS growth %",
        "peak growth %",
    ]
    return [table(f"Memory (MiB) of {r['label']}", headers, rows)]


def breakdown_table(results: dict) -> list[str]:
    if "breakdown" not in results:
        return []
    r = results["breakdown"]
    rows = [
        [("    " * p["indent"]) + p["phase"], fmt(p["seconds"] * 1000, ".1f"), fmt(p["share"], ".1%")]
        for p in r["phases"]
    ]
    title = (
        f"Breakdown of one Ray 2-worker MLP iteration ({r['steps_per_iteration']} env steps), {r['label']}; "
        "indented rows are inside collect"
    )
    return [table(title, ["phase", "ms/iteration", "share"], rows)]


def render(results: dict, skipped: dict, meta: dict) -> str:
    """Every table that has rows, after a header line on the machine and its load."""
    out = [
        *header(results, meta),
        *throughput_table(results, skipped),
        *limits_table(results),
        *solve_table(results, skipped),
        *memory_table(results),
        *breakdown_table(results),
    ]
    return "\n\n".join(out)


def finite(value):
    """NaN and inf become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(payload), indent=2, default=str, allow_nan=False) + "\n")
