"""A multi-agent run's learners: one actor holding every policy (updating them one after another)
against an actor per policy (`learner.actor_per_policy`, updating them at the same time).

The one actor (MultiLearnerActor) costs one call and one process per iteration; an actor per
policy costs a process, its memory and a call per policy, and its updates overlap. Two measures,
on `configs/speaker_listener.yaml`'s two policies with hidden sizes made equal (so neither update
hides the other):

- update: the same rollouts (collected once) fed to both layouts' actors, each update timed from
  submit to result, the layouts in turns (A B A B ...).
- run: whole training runs on Ray, env steps over training wall time (summary.json), alternating.

    python -m benchmarks.learner_layout update [--rounds 5] [--hidden 256] [--json out.json]
    python -m benchmarks.learner_layout run [--pairs 3] [--iterations 20] [--hidden 256] [--overlap] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from benchmarks.processes import children_reaped, log
from benchmarks.report import write_json
from benchmarks.rows import REPO_ROOT

CONFIG = REPO_ROOT / "configs/speaker_listener.yaml"
ANY_LAG = 1 << 40  # the same rollouts feed every update
LAYOUTS = {"one_actor": False, "actor_per_policy": True}  # -> learner.actor_per_policy


def overrides(hidden: int, envs: int, steps: int) -> list[str]:
    sizes = f"[{hidden},{hidden}]"
    return [f"policies.speaker.hidden_sizes={sizes}", f"policies.listener.hidden_sizes={sizes}",
            f"workers.envs_per_worker={envs}", f"ppo.rollout_steps={steps}"]  # fmt: skip


def rollouts(config, probe, workers: int) -> list:
    """Each worker's rollout of one iteration, with the initial policies."""
    from trainer.runtime.inline import InProcessMultiLearner
    from workers.multi_agent_worker import MultiAgentRolloutWorker

    snapshot = InProcessMultiLearner(config, probe).snapshot()
    return [MultiAgentRolloutWorker(config, index, probe).collect(snapshot) for index in range(workers)]


def timed(actors: list, rollout_refs: list) -> float:
    """Seconds from submitting one update to every actor to holding every result they return."""
    import ray

    started = time.perf_counter()
    ray.get([ref for actor in actors for ref in actor.update_shard.remote(time.time(), *rollout_refs)])
    return time.perf_counter() - started


def update(rounds: int, hidden: int, envs: int, steps: int) -> dict:
    """The learner side alone: the actors the two layouts start (a MultiLearnerActor holding
    every policy, or one holding each), fed the same rollouts."""
    import ray

    from trainer.core.agents import probe_agents
    from trainer.core.config import load_config
    from trainer.runtime.learner_group import LIVENESS_GROUPS, MultiLearnerActor

    config = load_config(CONFIG, overrides(hidden, envs, steps))
    probe = probe_agents(config)
    batch = rollouts(config, probe, config.workers.num_workers)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        actor = ray.remote(concurrency_groups=LIVENESS_GROUPS)(MultiLearnerActor).options(num_cpus=0)
        layouts = {
            "one_actor": [actor.remote(config, probe, 0, 1, ANY_LAG)],
            "actor_per_policy": [actor.remote(config, probe.only(name), 0, 1, ANY_LAG) for name in probe.groups],
        }
        ray.get([a.ready.remote() for actors in layouts.values() for a in actors])
        refs = [ray.put(rollout) for rollout in batch]
        for _ in range(2):  # warm-up: allocation, the first optimizer steps
            for actors in layouts.values():
                timed(actors, refs)
        rows = []
        for index in range(rounds):
            rows.append({name: timed(actors, refs) for name, actors in layouts.items()})
            log(f"round {index + 1}: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in rows[-1].items()))
    finally:
        ray.shutdown()
    samples = sum(part.tensors["valid"].sum().item() for rollout in batch for part in rollout.parts.values())
    return {"samples_per_update": int(samples), **summarize(rows, "update_s", min)}


def run(pairs: int, iterations: int, hidden: int, envs: int, steps: int, overlap: bool) -> dict:
    """Whole runs on Ray (embedded), env steps over training wall time, the layouts alternating."""
    import trainer

    rows = []
    for index in range(pairs):
        row = {}
        for name, apart in LAYOUTS.items():
            extra = [f"learner.actor_per_policy={str(apart).lower()}", f"workers.overlap={str(overlap).lower()}",
                     "execution=ray", "logging.tensorboard=false",
                     "checkpoint.every=0", f"ppo.total_steps={iterations * 2 * envs * steps}"]  # fmt: skip
            with children_reaped():
                summary = trainer.train(CONFIG, overrides=overrides(hidden, envs, steps) + extra)
            row[name] = summary["steps_per_s"]
        rows.append(row)
        log(f"pair {index + 1}: " + ", ".join(f"{name} {value:,.0f} env steps/s" for name, value in row.items()))
    return summarize(rows, "env_steps_per_s", max)


def summarize(rows: list[dict], unit: str, better) -> dict:
    medians = {name: statistics.median(row[name] for row in rows) for name in LAYOUTS}
    return {"unit": unit, "rows": rows, "medians": medians,
            "actor_per_policy_speedup": medians["one_actor"] / medians["actor_per_policy"] if better is min
            else medians["actor_per_policy"] / medians["one_actor"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("update", "run"))
    parser.add_argument("--rounds", type=int, default=5, help="update: turns of the two layouts")
    parser.add_argument("--pairs", type=int, default=3, help="run: A B pairs of runs")
    parser.add_argument("--iterations", type=int, default=20, help="run: iterations of each run")
    parser.add_argument("--hidden", type=int, default=256, help="hidden width of both policies' two layers")
    parser.add_argument("--envs", type=int, default=32, help="envs per worker")
    parser.add_argument("--steps", type=int, default=128, help="rollout steps")
    parser.add_argument("--overlap", action="store_true", help="run: workers.overlap on")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with children_reaped():
        if args.mode == "update":
            result = update(args.rounds, args.hidden, args.envs, args.steps)
        else:
            result = run(args.pairs, args.iterations, args.hidden, args.envs, args.steps, args.overlap)
    result |= {"mode": args.mode, "config": str(CONFIG.relative_to(REPO_ROOT)), "hidden_sizes": [args.hidden] * 2,
               "envs_per_worker": args.envs, "rollout_steps": args.steps, "overlap": args.overlap,
               "cpus": os.cpu_count()}  # fmt: skip
    log(f"medians ({result['unit']}): " + ", ".join(f"{k} {v:.3f}" for k, v in result["medians"].items())
        + f"; an actor per policy {result['actor_per_policy_speedup']:.2f}x")  # fmt: skip
    if args.json:
        write_json(Path(args.json), result)


if __name__ == "__main__":
    main()
