"""The memory row: runs benchmarks.memory in a fresh driver process and turns its two readings
into each process's RSS and peak RSS growth between them."""

from __future__ import annotations

import math
import sys

from benchmarks.memory import RESULT_PREFIX
from benchmarks.processes import children_reaped, result_line, run_subprocess, set_args
from benchmarks.rows import CONFIGS, ENVS_PER_WORKER, Params


def growth_pct(first: dict, last: dict, key: str) -> float:
    return 100.0 * (last[key] - first[key]) / first[key] if first[key] else math.nan


def run_memory(params: Params) -> dict:
    """RSS of the driver, each worker and the learner of a Ray 2-worker MLP run after each probe."""
    first, last = params.memory_probes
    overrides = ["workers.num_workers=2", f"workers.envs_per_worker={ENVS_PER_WORKER}", "logging.tensorboard=false"]
    cmd = [sys.executable, "-m", "benchmarks.memory", CONFIGS["mlp"], "--probe", str(first), "--probe", str(last)]
    cmd += set_args(overrides)
    with children_reaped():
        code, lines, _ = run_subprocess(cmd, timeout_s=600)
        result = result_line(lines, RESULT_PREFIX, cmd, code)
    a, b = result["readings"][str(first)], result["readings"][str(last)]
    processes = [
        {
            "process": name,
            "at_first": a[name],
            "at_last": b[name],
            "rss_growth_pct": growth_pct(a[name], b[name], "rss_mib"),
            "peak_growth_pct": growth_pct(a[name], b[name], "peak_rss_mib"),
        }
        for name in a
    ]
    return {
        "group": "memory",
        "label": f"ray, 2 workers x {ENVS_PER_WORKER} envs, MLP; after iteration {first} and {last}",
        "probes": [first, last],
        "pids": result["pids"],
        "processes": processes,
        "steps_per_s": result["steps_per_s"],
        "worker_restarts": result["worker_restarts"],
        "command": " ".join(cmd[1:]),
    }
