"""Where a rollout worker's memory and start-up time go, stage by stage.

Each stage runs in a fresh interpreter that imports (or builds) one thing more than the one
before: Python itself, Ray, torch, gymnasium, the worker's modules, a built worker (envs and
policy), and a built worker with `workers.vector_env: async` (its env subprocesses counted
too). Per stage: RSS, USS (the pages only that process holds: what one more worker costs a
node) and the CPU time the process has used, all cumulative; the per-node worker count a
16 GiB node allows follows from the worker actor's USS measured by benchmarks/scaling.py.

    python -m benchmarks.worker_memory [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.processes import failed, result_line, run_subprocess
from benchmarks.report import fmt, table, write_json

PREFIX = "WORKER_MEMORY "
STAGES = {
    "python": "",
    "+ import ray": "import ray",
    "+ import torch": "import ray, torch",
    "+ import gymnasium": "import ray, torch, gymnasium",
    "+ the worker's modules": "import ray, torch, gymnasium, workers.ray_worker",
    "+ a built worker (CartPole, 8 envs)": "import workers.ray_worker; build('sync')",
    "+ a built worker, async (8 env subprocesses)": "import workers.ray_worker; build('async')",
}
MEASURE = """
import json, os, time, psutil
def build(mode):
    from trainer.core.config import load_config
    from trainer.core.envs import probe_run
    from workers.rollout_worker import RolloutWorker
    config = load_config({'execution': 'inline', 'workers': {'envs_per_worker': 8, 'vector_env': mode}})
    global worker
    worker = RolloutWorker(config, 0, probe_run(config))
if __name__ == '__main__':
    STAGE
    me = psutil.Process()
    info = me.memory_full_info()
    children = me.children(recursive=True)
    result = {'rss_mib': info.rss / 2**20, 'uss_mib': info.uss / 2**20, 'cpu_s': time.process_time(),
              'children': len(children), 'children_uss_mib': sum(c.memory_full_info().uss for c in children) / 2**20}
    print('PREFIX' + json.dumps(result), flush=True)
"""


def measure(stage: str) -> dict:
    code = MEASURE.replace("STAGE", stage or "pass").replace("PREFIX", PREFIX)
    cmd = [sys.executable, "-c", code]
    status, lines, _ = run_subprocess(cmd, timeout_s=300)
    if status != 0:
        raise failed(cmd, status, lines)
    return result_line(lines, PREFIX, cmd, status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per stage; the figures are medians")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args(argv)
    results = {}
    for name, stage in STAGES.items():
        runs = [measure(stage) for _ in range(args.repeats)]
        results[name] = {key: sorted(run[key] for run in runs)[len(runs) // 2] for key in runs[0]}
    rows = [
        [
            name,
            fmt(r["rss_mib"], ".0f"),
            fmt(r["uss_mib"], ".0f"),
            fmt(r["cpu_s"], ".2f"),
            f"{r['children']} ({r['children_uss_mib']:.0f} MiB USS)" if r["children"] else "-",
        ]
        for name, r in results.items()
    ]
    headers = ["stage (cumulative)", "RSS MiB", "USS MiB", "CPU s", "subprocesses"]
    print(table("Where a worker's memory and start-up go", headers, rows, right={1, 2, 3}))
    if args.json:
        write_json(Path(args.json), results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
