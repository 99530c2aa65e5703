"""How the Ray runtime scales with the number of rollout workers, on a latency-bound env.

Every env step waits `--step-ms` without using the CPU (benchmarks/latency_env.py), so the
rollout floor, the time one rollout must take, is T x E x step with the sync vector env (the E
envs step one after another) and T x step with `workers.vector_env: async` (they wait at
once). A runtime that coordinates for free runs an iteration in the floor; efficiency is the
floor over the measured iteration time. Per row (each run in a process of its own, on a fresh
Ray: one node, or a `ray.cluster_utils.Cluster` of `--nodes` simulated nodes), medians over the
iterations after warm-up:

- iteration time, steps/s and the ideal (all envs' steps in the floor), efficiency;
- coordination: iteration time minus the slowest worker's rollout, and the driver's CPU per
  iteration (Ray's threads in it included): the runtime's `perf/coordination_s` and
  `perf/driver_cpu_s`;
- the bytes put into the object store per iteration (rollouts, and the snapshot once);
- learner ingestion: fetching the rollouts from the object store and copying them into the buffer;
- start-up: from `train()` to the first iteration;
- memory per process kind (RSS, and USS: the pages only that process holds, what one more
  worker really costs), sampled at the end of the run, and CPU per process kind per iteration;
  the CPU load is all of it against what the cores give in an iteration (near 100%, the
  machine is the limit, not the coordination).

    python -m benchmarks.scaling [--workers 1,2,4,8,16,32,64] [--nodes 1,4] [--overlap on,off]
        [--vector sync] [--per-process 1,16] [--envs 4] [--straggler 16] [--iterations 10]
        [--step-ms 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.processes import children_reaped, cpu_s, failed, log, process_tree, result_line, run_subprocess
from benchmarks.report import fmt, table, write_json
from benchmarks.rows import REPO_ROOT

ROW_PREFIX = "SCALING_ROW "
WARMUP = 3
T = 64


def row_config(row: dict) -> dict:
    workers, E = row["workers"], row["envs"]
    kwargs = {"step_s": row["step_ms"] / 1000}
    if row.get("straggler"):
        kwargs["straggler_file"] = row["straggler_file"]
    config = {
        "env": {"id": "benchmarks.latency_env:LatencyEnv", "kwargs": kwargs},
        "policy": {"kind": "mlp"},
        "ppo": {"rollout_steps": T, "total_steps": row["iterations"] * workers * T * E, "update_epochs": 2},
        "workers": {
            "num_workers": workers,
            "envs_per_worker": E,
            "num_cpus": row["worker_cpus"],
            "overlap": row["overlap"],
            "sample_timeout_s": 600.0,
            "per_process": row.get("per_process", 1),
            **({"nice": row["nice"]} if "nice" in row else {}),
        },
        "checkpoint": {"every": 0},
        "logging": {"dir": row["run_parent"]},
        "execution": "ray",
    }
    if row["vector"] != "sync":
        config["workers"]["vector_env"] = row["vector"]
    return config


def floor_s(row: dict) -> float:
    envs_in_turn = row["envs"] if row["vector"] == "sync" else 1
    return T * envs_in_turn * row["step_ms"] / 1000


def process_kind(proc, name: str) -> str:
    if proc.pid == os.getpid():
        return "driver"
    if name.startswith("ray::"):
        return name.split()[0].split(".")[0].removeprefix("ray::")
    return Path(name).name


def processes() -> dict[int, tuple[str, object]]:
    """Every process of this run (this one and Ray's, all its descendants), with its kind: Ray
    names its workers `ray::<Actor>`, the others go by their programs."""
    import psutil

    found = {}
    for proc in process_tree(psutil.Process()):
        try:
            cmdline = proc.cmdline()
            found[proc.pid] = (process_kind(proc, cmdline[0] if cmdline else proc.name()), proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def cpu_seconds(found: dict) -> dict[int, float]:
    import psutil

    seconds = {}
    for pid, (_, proc) in found.items():
        try:
            seconds[pid] = cpu_s(proc)
        except psutil.NoSuchProcess:
            continue
    return seconds


def process_table(found: dict, cpu_before: dict[int, float], iterations: int) -> dict[str, dict[str, float]]:
    """By kind: count, mean RSS and USS (MiB), and the CPU seconds per iteration all of that kind
    used together since `cpu_before` was taken."""
    import psutil

    kinds: dict[str, list] = {}
    cpu_after = cpu_seconds(found)
    for pid, (kind, proc) in found.items():
        try:
            info = proc.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        cpu = cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0)
        kinds.setdefault(kind, []).append((info.rss, info.uss, cpu))
    mib = 1024**2
    return {
        kind: {
            "count": len(values),
            "rss_mib": statistics.fmean(v[0] for v in values) / mib,
            "uss_mib": statistics.fmean(v[1] for v in values) / mib,
            "cpu_s_per_iteration": sum(v[2] for v in values) / max(1, iterations),
        }
        for kind, values in kinds.items()
    }


def payload_bytes(config) -> tuple[int, int]:
    """(one worker's rollout, the snapshot) in bytes, from the same specs the runtime allocates by."""
    from trainer.core.envs import probe_run
    from trainer.core.policy import build_policy, rollout_spec

    probe = probe_run(config)
    policy = build_policy(probe.obs_spec, probe.action_space, config)
    rollout = rollout_spec(probe.obs_spec, policy, config).allocate(config.workers.envs_per_worker)
    rollout_bytes = sum(t.numel() * t.element_size() for t in rollout.values())
    snapshot_bytes = sum(t.numel() * t.element_size() for t in policy.state_dict().values())
    return rollout_bytes, snapshot_bytes


def run_row(row: dict) -> dict:
    """One training run as the row says; its medians."""
    import ray

    import trainer
    from trainer.core.config import load_config

    reports, memory, marks = [], {}, {}

    class Measure(trainer.Callback):
        def on_iteration(self, report) -> None:
            reports.append(report.scalars)
            if len(reports) == WARMUP:
                marks["processes"] = processes()
                marks["process_cpu"] = cpu_seconds(marks["processes"])

        def on_end(self, session, completed: bool) -> None:
            memory.update(process_table(marks["processes"], marks["process_cpu"], len(reports) - WARMUP))

    config = row_config(row)
    cluster, address = None, None
    if row["nodes"] > 1:
        from ray.cluster_utils import Cluster

        per_node = math.ceil(-(-row["workers"] // row["nodes"]) * row["worker_cpus"]) + 2
        # Nodes as docs/cluster.md starts them where the learner shares a node: workers at nice 0.
        head = {"num_cpus": per_node, "include_dashboard": False, "_system_config": {"worker_niceness": 0}}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for _ in range(row["nodes"] - 1):
            cluster.add_node(num_cpus=per_node)
        cluster.wait_for_nodes()
        address = cluster.address
    try:
        summary = trainer.train(config, address=address, callbacks=[Measure()])
    finally:
        if cluster is not None:
            ray.shutdown()
            cluster.shutdown()
    measured = reports[WARMUP:]
    count, E = row["workers"], row["envs"]

    def median(values) -> float:
        return statistics.median(list(values))

    iteration = median(s["perf/iteration_s"] for s in measured)
    rollout_bytes, snapshot_bytes = payload_bytes(load_config(config))
    floor = floor_s(row)
    result = {
        **{k: row[k] for k in ("workers", "envs", "nodes", "overlap", "vector", "straggler", "step_ms")},
        "per_process": row.get("per_process", 1),
        "iteration_s": iteration,
        "floor_s": floor,
        "efficiency": floor / iteration,
        "steps_per_s": count * T * E / iteration,
        "ideal_steps_per_s": count * T * E / floor,
        "slowest_rollout_s": median(s["perf/slowest_rollout_s"] for s in measured),
        "coordination_s": median(s["perf/coordination_s"] for s in measured),
        "driver_cpu_s": median(s["perf/driver_cpu_s"] for s in measured),
        "object_store_mib": (count * rollout_bytes + snapshot_bytes) / 1024**2,
        "ingest_s": median(s.get("perf/transfer_s", 0.0) + s.get("perf/copy_s", 0.0) for s in measured),
        "learn_s": median(s.get("perf/learn_s", 0.0) for s in measured),
        "startup_s": summary["startup_s"],
        "memory": memory,
        "summary_steps_per_s": summary["steps_per_s"],
    }
    if row["straggler"]:
        others = [median(sorted(s[f"workers/{i}/rollout_s"] for i in range(count))[:-1]) for s in measured]
        result["others_rollout_s"] = median(others)
        result["others_idle_s"] = iteration - result["others_rollout_s"]
    return result


def spawn_row(row: dict, timeout_s: float) -> dict:
    """Run one row in a child process (a fresh Ray; its memory gone before the next row)."""
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--row", json.dumps(row)]
    with children_reaped():
        code, lines, _ = run_subprocess(cmd, timeout_s)
    if code != 0:
        raise failed(cmd, code, lines)
    return result_line(lines, ROW_PREFIX, cmd, code)


def rows_wanted(args) -> list[dict]:
    base = {"iterations": args.iterations, "step_ms": args.step_ms, "worker_cpus": args.worker_cpus, "straggler": False}
    base["envs"] = args.envs
    if args.nice is not None:
        base["nice"] = args.nice
    rows = []
    for vector in args.vector.split(","):
        for overlap in args.overlap.split(","):
            for nodes in (int(n) for n in args.nodes.split(",")):
                for workers in (int(n) for n in args.workers.split(",")):
                    for per_process in (int(n) for n in args.per_process.split(",")):
                        shape = {"workers": workers, "nodes": nodes, "overlap": overlap == "on", "vector": vector}
                        rows.append({**base, **shape, "per_process": per_process})
    for workers in (int(n) for n in args.straggler.split(",") if n):
        rows.append({**base, "workers": workers, "nodes": 1, "overlap": True, "vector": "sync", "straggler": True})
    return rows


def cpu_load(result: dict) -> float:
    """The CPU all processes of the run used per iteration, as a share of what this machine's
    cores give in one iteration: near 100%, the cores are the limit, not the coordination."""
    used = sum(kind["cpu_s_per_iteration"] for kind in result["memory"].values())
    return used / ((os.cpu_count() or 1) * result["iteration_s"])


def render(results: list[dict]) -> str:
    headers = [
        "workers", "envs", "step ms", "nodes", "overlap", "vector", "iteration s", "floor s", "efficiency",
        "steps/s", "ideal",
        "coordination s", "driver CPU s", "object store MiB", "ingest s", "learn s", "start-up s",
        "process RSS MiB", "process USS MiB", "worker CPU s", "CPU load",
    ]  # fmt: skip
    rows = []
    for r in results:
        worker = r["memory"].get("RolloutHostActor", {})
        per_process = r.get("per_process", 1)
        name = f"{r['workers']}" + (f" ({per_process} per process)" if per_process > 1 else "")
        name += " (1 straggler)" if r["straggler"] else ""
        rows.append([
            name, str(r["envs"]), fmt(r["step_ms"], "g"), str(r["nodes"]), "on" if r["overlap"] else "off",
            r["vector"], fmt(r["iteration_s"], ".2f"),
            fmt(r["floor_s"], ".2f"), fmt(r["efficiency"], ".2f"), fmt(r["steps_per_s"]), fmt(r["ideal_steps_per_s"]),
            fmt(r["coordination_s"], ".3f"), fmt(r["driver_cpu_s"], ".3f"), fmt(r["object_store_mib"], ".1f"),
            fmt(r["ingest_s"], ".3f"), fmt(r["learn_s"], ".3f"), fmt(r["startup_s"], ".1f"),
            fmt(worker.get("rss_mib"), ".0f"), fmt(worker.get("uss_mib"), ".0f"),
            fmt(worker.get("cpu_s_per_iteration", 0.0) / r["workers"], ".3f"),
            fmt(cpu_load(r), ".0%"),
        ])  # fmt: skip
    lines = [table("Scaling on a latency-bound env", headers, rows, right=set(range(6, len(headers))))]
    for r in results:
        if r["straggler"]:
            lines.append(
                f"straggler ({r['workers']} workers, one 2x slower): iteration {r['iteration_s']:.2f} s, "
                f"the straggler's rollout {r['slowest_rollout_s']:.2f} s, the others' {r['others_rollout_s']:.2f} s, "
                f"so each other worker waits {r['others_idle_s']:.2f} s an iteration"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8,16,32,64")
    parser.add_argument("--nodes", default="1,4")
    parser.add_argument("--overlap", default="on")
    parser.add_argument("--vector", default="sync", help="sync, async or both (comma-separated)")
    parser.add_argument("--per-process", default="1", help="workers.per_process values (comma-separated)")
    parser.add_argument("--straggler", default="16", help="worker counts of straggler rows ('' for none)")
    parser.add_argument("--envs", type=int, default=4, help="envs per worker")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--worker-cpus", type=float, default=0.25, help="workers.num_cpus (logical)")
    parser.add_argument("--nice", type=int, help="workers.nice (default: the config's)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per row")
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    if args.row:
        print(ROW_PREFIX + json.dumps(run_row(json.loads(args.row))), flush=True)
        return 0
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, row in enumerate(rows_wanted(args)):
            row["run_parent"] = str(Path(scratch) / f"row{index}")
            row["straggler_file"] = str(Path(scratch) / f"straggler{index}")
            log(f"row {index}: {row['workers']} workers ({row.get('per_process', 1)} per process), "
                f"{row['nodes']} node(s), overlap {row['overlap']}, "
                f"{row['vector']}{', one straggler' if row['straggler'] else ''}")  # fmt: skip
            results.append(spawn_row(row, args.timeout_s))
            log(json.dumps({k: v for k, v in results[-1].items() if k != "memory"}))
            if args.json:
                write_json(Path(args.json), {"rows": results})
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
