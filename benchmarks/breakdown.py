"""Where one iteration of ours goes: the mean seconds of each phase (collect and, inside it, env
stepping and policy forward; transfer; buffer copy; learner update) and its share of the wall time."""

from __future__ import annotations

import math
import statistics

from benchmarks.rows import BREAKDOWN_SOURCE


def breakdown_from(run: dict) -> dict:
    """Mean seconds per iteration of each phase of `run` (a row of ours), and its share of the
    iteration's wall time."""
    its = run["iterations"]

    def mean(key):
        values = [it[key] for it in its if key in it]
        return statistics.fmean(values) if values else math.nan

    env = statistics.fmean(statistics.fmean(it["worker_env_s"]) for it in its)
    forward = statistics.fmean(statistics.fmean(it["worker_forward_s"]) for it in its)
    busiest = statistics.fmean(max(e + f for e, f in zip(it["worker_env_s"], it["worker_forward_s"])) for it in its)
    iteration = mean("iteration_s")
    collect, transfer, copy, update = (
        mean(k) for k in ("perf/collect_s", "perf/transfer_s", "perf/copy_s", "perf/learn_s")
    )
    known = sum(x for x in (collect, transfer, copy, update) if not math.isnan(x))
    phases = [
        ("collect (driver: submit -> all rollout infos back)", collect, 0),
        ("env stepping (worker mean, env_s)", env, 1),
        ("policy forward (worker mean, forward_s)", forward, 1),
        ("rest of collect (collect - busiest worker's env+forward)", collect - busiest, 1),
        ("transfer (learner ray.get of rollouts)", transfer, 0),
        ("buffer copy (learner receive/check/store)", copy, 0),
        ("learner update (PPO epochs)", update, 0),
        ("other (snapshot publish, Ray calls, driver)", iteration - known, 0),
        ("iteration (driver wall time of iterate())", iteration, 0),
    ]
    return {
        "group": "breakdown",
        "label": f"from {run['measured_iterations']} measured iterations of {run['label']}",
        "source_row": BREAKDOWN_SOURCE,
        "steps_per_iteration": run["steps_per_iteration"],
        "steps_per_s": run["steps_per_iteration"] / iteration,
        "phases": [{"phase": p, "seconds": s, "share": s / iteration, "indent": i} for p, s, i in phases],
    }
