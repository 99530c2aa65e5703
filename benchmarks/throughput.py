"""Throughput rows: our runtimes' env steps/s over a fixed step count after warm-up, the env's own
limit at the same core count, Stable-Baselines3 at the same env count, and the ratios between them."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field

from benchmarks.limit import measure_limit
from benchmarks.processes import children_reaped, log, result_line, run_subprocess
from benchmarks.rows import CONFIGS, ENVS_PER_WORKER, OURS, REPO_ROOT, SB3_ROWS, Params, limit_name, limit_spec
from trainer.core.timing import is_phase


def run_limit(name: str, params: Params) -> dict:
    """Steps/s of a limit row: the vector env stepping random actions, one process per core."""
    env_id, procs, vecs, envs = limit_spec(name)
    log(f"{name}: {procs} process(es) x {vecs} x {envs} envs of {env_id}")
    return measure_limit(env_id, procs, vecs, envs, params.limit_steps)


def limit_label(name: str) -> str:
    env_id, procs, vecs, envs = limit_spec(name)
    setup = f"{vecs} x {envs} envs in turn" if vecs > 1 else f"{envs} envs"
    return f"{env_id}, {procs} process{'es' * (procs > 1)} x {setup}"


def ours_config(name: str, iterations_total: int | None = None):
    from trainer.core.config import load_config

    execution, workers, policy, overlap = OURS[name]
    base = [
        f"execution={execution}",
        f"workers.overlap={overlap}",
        f"workers.num_workers={workers}",
        f"workers.envs_per_worker={ENVS_PER_WORKER}",
        "logging.progress_interval_s=1000",
        "logging.tensorboard=false",
    ]
    config = load_config(REPO_ROOT / CONFIGS[policy], base)
    if iterations_total is not None:  # so the LR schedule stays positive over the whole run
        config = load_config(config, [f"ppo.total_steps={iterations_total * config.steps_per_iteration}"])
    return config


@dataclass
class Timing:
    """Clock readings (perf_counter) of one run of ours, and each measured iteration's times."""

    created: float
    first_iteration_done: float = math.nan
    start: float = math.nan
    end: float = math.nan
    restarts: int = 0
    iterations: list[dict] = field(default_factory=list)


def time_iterations(runtime, timing: Timing, warmup: int, measured: int) -> None:
    runtime.iterate()
    timing.first_iteration_done = time.perf_counter()
    for _ in range(warmup - 1):
        runtime.iterate()
    timing.start = time.perf_counter()
    for _ in range(measured):
        tick = time.perf_counter()
        stats = runtime.iterate()
        wall = time.perf_counter() - tick
        timing.restarts = sum(stats.worker_restarts)  # since the runtime started
        timing.iterations.append(
            {
                "iteration_s": wall,
                **{k: v for k, v in stats.metrics.items() if is_phase(k)},  # perf/collect_s, ...: the TB tags
                "worker_env_s": [t.get("perf/env_s", math.nan) for t in stats.worker_timings],
                "worker_forward_s": [t.get("perf/forward_s", math.nan) for t in stats.worker_timings],
            }
        )
    timing.end = time.perf_counter()


def time_ours(config, execution: str, warmup: int, measured: int) -> Timing:
    """Build the runtime, run `warmup` then `measured` iterations, close it."""
    from trainer.core.envs import probe_run
    from trainer.runtime.inline import InlineRuntime

    probe = probe_run(config)
    with children_reaped(wait=execution == "ray"):
        timing = Timing(created=time.perf_counter())
        if execution == "ray":
            from trainer.runtime.ray_runtime import RayRuntime

            runtime = RayRuntime(config, probe, log=log)
        else:
            runtime = InlineRuntime(config, probe)
        try:
            time_iterations(runtime, timing, warmup, measured)
        finally:
            runtime.close()
    return timing


def run_ours(name: str, params: Params) -> dict:
    execution, workers, policy, overlap = OURS[name]
    measured_iterations = max(1, params.measured_steps[policy] // ours_config(name).steps_per_iteration)
    config = ours_config(name, params.warmup_iterations + measured_iterations)
    timing = time_ours(config, execution, params.warmup_iterations, measured_iterations)
    steps = measured_iterations * config.steps_per_iteration
    return {
        "group": "ours",
        "label": f"{execution}, {workers} worker{'s' * (workers > 1)} x {ENVS_PER_WORKER} envs, {policy.upper()}"
        + (", overlap (1 version lag)" if overlap else ""),
        "env_id": config.env.id,
        "execution": execution,
        "num_workers": workers,
        "envs_per_worker": ENVS_PER_WORKER,
        "total_envs": config.total_envs,
        "policy": policy,
        "steps_per_iteration": config.steps_per_iteration,
        "warmup_iterations": params.warmup_iterations,
        "measured_iterations": measured_iterations,
        "env_steps": steps,
        "wall_s": timing.end - timing.start,
        "steps_per_s": steps / (timing.end - timing.start),
        "startup_and_first_iteration_s": timing.first_iteration_done - timing.created,
        "worker_restarts": timing.restarts,  # > 0: a worker died during the measurement (skewed)
        "iterations": timing.iterations,
    }


def run_sb3_throughput(names: list[str], params: Params) -> dict[str, dict]:
    """The SB3 rows `names`, one after the other in one fresh process, with our rollout sizes."""
    from benchmarks.peers import RESULT_PREFIX

    specs = []
    for name in names:
        policy, envs = SB3_ROWS[name]
        config = ours_config(f"ray2-{policy}")
        specs.append(
            {
                "policy": policy,
                "envs": envs,
                "rollout_steps": config.ppo.rollout_steps,
                "num_minibatches": config.ppo.num_minibatches,
                "update_epochs": config.ppo.update_epochs,
                "warmup": params.sb3_warmup,
                "iterations": params.sb3_iterations[policy],
            }
        )
    cmd = [sys.executable, "-m", "benchmarks.peers", "throughput", json.dumps(specs)]
    code, lines, _ = run_subprocess(cmd, timeout_s=600)
    results = result_line(lines, RESULT_PREFIX, cmd, code)
    rows = {}
    for name, spec, result in zip(names, specs, results):
        rows[name] = {"group": "peers", "label": result["setup"], "policy": spec["policy"], "total_envs": spec["envs"]}
        rows[name].update(result)
    return rows


def link_ratios(results: dict) -> None:
    """Note on each row of ours its limit and SB3 rows and its ratio to each (None: no SB3 row)."""
    for name in OURS:
        row = results.get(name)
        if row is None:
            continue
        limit = results.get(limit_name(name))
        if limit is not None:
            row["limit_row"] = limit_name(name)
            row["limit_steps_per_s"] = limit["steps_per_s"]
            row["ratio_to_limit"] = row["steps_per_s"] / limit["steps_per_s"]
        sb3_name = f"sb3-{row['policy']}-{row['total_envs']}"
        sb3 = results.get(sb3_name)
        row["sb3_row"] = sb3_name
        row["sb3_steps_per_s"] = sb3["steps_per_s"] if sb3 else None
        row["ratio_to_sb3"] = row["steps_per_s"] / sb3["steps_per_s"] if sb3 else None
