"""Resident memory of every trainer process over a Ray run, in a fresh driver process.

    python -m benchmarks.memory CONFIG --probe 20 --probe 200 [--set key=value ...]

Runs the Ray runtime for the last probe's iteration count and, after each probe iteration,
reads the current RSS and the peak RSS (VmHWM) of the driver (this process), each rollout-worker
actor and the learner actor, plus Ray's own processes (raylet, GCS, ...) as one total.
Prints one line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psutil

RESULT_PREFIX = "RESULT "


def actor_pid(actor) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def read_memory(pid: int) -> dict[str, float]:
    """Current and peak resident set size in MiB (peak from /proc/PID/status VmHWM on Linux)."""
    process = psutil.Process(pid)
    rss = process.memory_info().rss
    peak = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"rss_mib": rss / 2**20, "peak_rss_mib": (peak if peak is not None else rss) / 2**20}


def snapshot(processes: dict[str, int]) -> dict[str, dict[str, float]]:
    memory = {name: read_memory(pid) for name, pid in processes.items()}
    known = set(processes.values())
    others = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in known:
            continue
        try:
            others.append(read_memory(child.pid))
        except (psutil.Error, OSError):
            continue
    memory["ray system processes (sum)"] = {
        "rss_mib": sum(m["rss_mib"] for m in others),
        "peak_rss_mib": sum(m["peak_rss_mib"] for m in others),
        "count": len(others),
    }
    return memory


def trainer_processes(runtime) -> dict[str, int]:
    from trainer.runtime.placement import host_name

    processes = {"driver": os.getpid()}
    for indices, host in zip(runtime.host_workers, runtime.hosts):
        processes[host_name(indices)] = actor_pid(host)
    processes["learner"] = actor_pid(runtime.learner.actor)
    return processes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--probe", type=int, action="append", required=True, help="iteration to read memory after")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    from trainer.core.config import load_config
    from trainer.core.envs import probe_run
    from trainer.runtime.ray_runtime import RayRuntime

    probes = sorted(set(args.probe))
    last = probes[-1]
    config = load_config(args.config, args.overrides)
    config = load_config(config, [f"ppo.total_steps={last * config.steps_per_iteration}", "execution=ray"])
    probe = probe_run(config)
    runtime = RayRuntime(config, probe, log=lambda m: print(m, file=sys.stderr))
    readings: dict[int, dict] = {}
    times: dict[int, float] = {}
    restarts = 0
    try:
        runtime.iterate()  # actors are up after this
        processes = trainer_processes(runtime)
        for iteration in range(1, last + 1):
            if iteration > 1:
                restarts = sum(runtime.iterate().worker_restarts)
            if iteration in probes:
                times[iteration] = time.perf_counter()
                try:
                    readings[iteration] = snapshot(processes)
                except psutil.NoSuchProcess:  # a worker died and was replaced: read its successor
                    processes = trainer_processes(runtime)
                    readings[iteration] = snapshot(processes)
    finally:
        runtime.close()
    first = probes[0]
    steps = (last - first) * config.steps_per_iteration
    result = {
        "probes": probes,
        "steps_per_iteration": config.steps_per_iteration,
        "pids": processes,
        "worker_restarts": restarts,
        "readings": {str(k): v for k, v in readings.items()},
        "steps_per_s": steps / (times[last] - times[first]) if last > first else None,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
