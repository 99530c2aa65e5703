"""One-run benchmark of the trainer: throughput against the env's own limit, time-to-solve,
memory over a long run, a per-iteration breakdown, and Stable-Baselines3 peers when installed.

    python -m benchmarks.benchmark [--smoke] [--json OUT] [--only ROWS]

Rows (`--only` takes a comma-separated list of names, fnmatch patterns or group names):
  limit-*            the trainer's vector env stepping pre-sampled random actions, one process per
                     core the trainer's workers get (group `limit`)
  {inline,ray1,ray2}-{mlp,lstm}
                     our steps/s over a fixed step count after warm-up iterations, driving
                     InlineRuntime / RayRuntime.iterate() directly (group `ours`); ratio to the
                     row's limit and to SB3 at the same env count
  solve-{inline,ray} `python -m trainer train configs/cartpole.yaml` in a subprocess, timed from
                     launch (interpreter start, imports, Ray start-up included) to the progress
                     line of the iteration that solved it, and to exit (group `solve`)
  memory             current and peak RSS of the driver, each worker and the learner after
                     iteration 20 and 200 of a Ray 2-worker MLP run (fresh driver process)
  breakdown          where one Ray 2-worker MLP iteration goes (from the ray2-mlp run)
  sb3-*              Stable-Baselines3 PPO / sb3-contrib RecurrentPPO peers (group `peers`);
                     skipped with a note when not installed

Everything runs one after the other on this machine; nothing else should be running.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.breakdown import breakdown_from
from benchmarks.foreign_load import ForeignLoad
from benchmarks.memory_row import run_memory
from benchmarks.processes import log
from benchmarks.report import render, write_json
from benchmarks.rows import (
    ALL_ROWS,
    BREAKDOWN_SOURCE,
    FULL,
    GROUPS,
    LIMIT_ROWS,
    OURS,
    REPO_ROOT,
    SB3_ROWS,
    SMOKE,
    SOLVE_ROWS,
    Params,
    limit_name,
)
from benchmarks.solve import run_sb3_solve, run_solve
from benchmarks.throughput import limit_label, link_ratios, run_limit, run_ours, run_sb3_throughput


def select_rows(only: str | None) -> list[str]:
    if not only:
        return list(ALL_ROWS)
    chosen: set[str] = set()
    for item in filter(None, (part.strip() for part in only.split(","))):
        matched = GROUPS.get(item) or fnmatch.filter(ALL_ROWS, item)
        if not matched:
            raise SystemExit(
                f"--only: {item!r} matches no row; rows: {', '.join(ALL_ROWS)}; groups: {', '.join(GROUPS)}"
            )
        chosen.update(matched)
    return [row for row in ALL_ROWS if row in chosen]


class Measure:
    """Runs a row once the machine is quiet, and notes on it the CPU other processes used meanwhile."""

    def __init__(self, foreign: ForeignLoad, idle_wait_s: float) -> None:
        self.foreign = foreign
        self.idle_wait_s = idle_wait_s

    def __call__(self, run, *args, many: bool = False):
        """run(*args): one row, or with `many` a dict of rows."""
        waited = self.foreign.wait_idle(self.idle_wait_s) if self.idle_wait_s else 0.0
        if waited >= self.idle_wait_s > 0:
            log(f"machine still busy after waiting {waited:.0f}s; measuring anyway")
        start = time.monotonic()
        out = run(*args)
        load = self.foreign.mean_between(start, time.monotonic())
        for row in out.values() if many else [out]:
            row["foreign_cpu_cores"] = load
        return out


def run_ours_rows(selected: list[str], params: Params, measure: Measure, results: dict) -> None:
    """Limits first (for every row of ours that runs), then ours; breakdown from its source row."""
    ours = [n for n in OURS if n in selected]
    if "breakdown" in selected and BREAKDOWN_SOURCE not in ours:
        ours.append(BREAKDOWN_SOURCE)
    for name in sorted({limit_name(n) for n in ours} | {n for n in LIMIT_ROWS if n in selected}):
        results[name] = measure(run_limit, name, params)
        results[name].update(group="limit", label=limit_label(name))
    for name in ours:
        log(f"{name}: running")
        row = measure(run_ours, name, params)
        log(f"{name}: {row['steps_per_s']:,.0f} steps/s")
        if name == BREAKDOWN_SOURCE and "breakdown" in selected:
            results["breakdown"] = breakdown_from(row)
            results["breakdown"]["foreign_cpu_cores"] = row["foreign_cpu_cores"]
        if name in selected:
            results[name] = row


def run_peer_rows(selected: list[str], params: Params, measure: Measure, results: dict, skipped: dict) -> None:
    """The SB3 rows whose libraries import; the others skipped with the reason."""
    from benchmarks.peers import available

    missing = available()
    sb3_missing = missing["stable_baselines3"]
    runnable = []
    for name in (n for n in SB3_ROWS if n in selected):
        reason = sb3_missing or (missing["sb3_contrib"] if SB3_ROWS[name][0] == "lstm" else None)
        if reason:
            skipped[name] = reason
        else:
            runnable.append(name)
    if runnable:
        log(f"peers: {', '.join(runnable)}")
        results.update(measure(run_sb3_throughput, runnable, params, many=True))
    if "sb3-solve" in selected:
        if sb3_missing:
            skipped["sb3-solve"] = sb3_missing
        else:
            log("sb3-solve: running")
            results["sb3-solve"] = measure(run_sb3_solve, params)


def run_rows(selected: list[str], params: Params, foreign: ForeignLoad) -> tuple[dict[str, dict], dict[str, str]]:
    """Each selected row in turn: results by row name, and the reason for each row skipped."""
    measure = Measure(foreign, params.idle_wait_s)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    run_ours_rows(selected, params, measure, results)
    if "memory" in selected:
        log("memory: Ray 2-worker MLP run in a fresh driver process")
        results["memory"] = measure(run_memory, params)
    for name in SOLVE_ROWS:
        if name in selected:
            results[name] = measure(run_solve, name, params)
    run_peer_rows(selected, params, measure, results, skipped)
    return results, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every row with tiny step counts (CI)")
    parser.add_argument("--json", help="write the results here (default: runs/benchmark-<time>.json)")
    parser.add_argument("--only", help=f"comma-separated rows, patterns or groups ({', '.join(GROUPS)})")
    args = parser.parse_args(argv)
    params = SMOKE if args.smoke else FULL
    selected = select_rows(args.only)
    began = time.perf_counter()
    with ForeignLoad() as foreign:
        results, skipped = run_rows(selected, params, foreign)
    link_ratios(results)
    import torch

    meta = {
        "smoke": args.smoke,
        "command": " ".join(["python", "-m", "benchmarks.benchmark", *(sys.argv[1:] if argv is None else argv)]),
        "machine": f"{platform.node()} ({platform.machine()})",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "params": dict(params.__dict__),
        "foreign_cpu_load": foreign.summary(),
        "total_wall_s": time.perf_counter() - began,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    text = render(results, skipped, meta)
    print(text, flush=True)
    out = Path(args.json) if args.json else REPO_ROOT / "runs" / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(out, {"meta": meta, "rows": results, "skipped": skipped, "table": text})
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
