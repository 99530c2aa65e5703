"""Whether the cluster can hold the run, checked before any actor exists: a config that asks more
than the nodes have would otherwise leave actors pending forever, and the run would fail minutes
later blaming a worker that never started."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from trainer.core.config import Config
from trainer.core.errors import UserError

POLL_S = 5.0


def scheduling_strategy(outside: str | None = None):
    """Where an actor of the run goes: inside the placement group this process runs in (a
    sweep's trial, which holds the resources of its learner and workers, so concurrent trials
    cannot take each other's), else `outside` (e.g. SPREAD; None: Ray's default)."""
    group = ray.util.get_current_placement_group()
    return PlacementGroupSchedulingStrategy(group) if group is not None else outside


class ClusterTooSmall(UserError):
    """The cluster's nodes cannot hold the learner and every worker."""


@dataclass(frozen=True)
class Demand:
    name: str
    resources: dict[str, float]


def worker_hosts(config: Config) -> list[range]:
    """The rollout workers' indices, grouped by the actor process that hosts them
    (workers.per_process to a process, the last one takes what is left)."""
    count, per = config.workers.num_workers, config.workers.per_process
    return [range(start, min(start + per, count)) for start in range(0, count, per)]


def host_name(indices: range) -> str:
    """`rollout worker 3`, or `rollout workers 0-15` for a process hosting several."""
    return f"rollout worker {indices[0]}" if len(indices) == 1 else f"rollout workers {indices[0]}-{indices[-1]}"


def run_demands(config: Config) -> list[Demand]:
    """One bundle per actor, as the Ray runtime will ask for it; a host of several rollout
    workers asks for what they ask together."""
    learner = {"CPU": config.learner.num_cpus, "GPU": config.learner.num_gpus}
    worker = {"CPU": config.workers.num_cpus, **config.workers.resources}
    count = config.learner.num_learners
    demands = [Demand("the learner" if count == 1 else f"learner rank {r}", learner) for r in range(count)]
    for indices in worker_hosts(config):
        demands.append(Demand(host_name(indices), {key: value * len(indices) for key, value in worker.items()}))
    if config.eval.every:
        demands.append(Demand("the evaluation actor", {"CPU": config.eval.num_cpus}))
    return [Demand(d.name, {k: v for k, v in d.resources.items() if v > 0}) for d in demands]


def trial_bundles(config: Config) -> list[dict[str, float]]:
    """The placement group of a run that a sweep places as one trial: under Ray, an empty bundle
    for the trial's own process (the session's driver) and one per learner, worker and
    evaluation actor; inline, one bundle for the process that does it all."""
    demands = [d.resources for d in run_demands(config)]
    return [{}, *demands] if config.execution == "ray" else demands[:1]


def unplaced(demands: list[Demand], nodes: list[dict[str, float]]) -> list[Demand]:
    """The demands a first-fit-decreasing packing onto the nodes leaves out (an actor must fit on
    one node)."""
    free = [dict(node) for node in nodes]
    left = []

    def size(demand: Demand) -> tuple:
        return demand.resources.get("GPU", 0.0), demand.resources.get("CPU", 0.0), sum(demand.resources.values())

    for demand in sorted(demands, key=size, reverse=True):
        node = next((n for n in free if all(n.get(k, 0.0) >= v for k, v in demand.resources.items())), None)
        if node is None:
            left.append(demand)
            continue
        for key, value in demand.resources.items():
            node[key] -= value
    return left


def cluster_nodes() -> list[dict[str, float]]:
    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def ensure_fits(config: Config, log: Callable[[str], None], embedded: bool) -> None:
    """Return once the cluster can hold the run. A cluster too small fails at once, in one line
    naming the numbers and keys, unless `cluster.wait_for_resources_s` lets an autoscaler add
    nodes first (it is asked for them)."""
    demands = run_demands(config)
    missing = unplaced(demands, cluster_nodes())
    if embedded:
        _warn_oversubscribed(config, log)
    if not missing:
        return
    wait_s = config.cluster.wait_for_resources_s
    if wait_s > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[d.resources for d in demands])
        deadline, last_said = time.monotonic() + wait_s, 0.0
        while missing and time.monotonic() < deadline:
            if time.monotonic() - last_said >= 30.0:
                log(f"waiting up to {wait_s:g}s (cluster.wait_for_resources_s) for nodes: {_pending(missing)} pending")
                last_said = time.monotonic()
            time.sleep(max(0.0, min(POLL_S, deadline - time.monotonic())))
            missing = unplaced(demands, cluster_nodes())
        if not missing:
            log("the cluster now holds the run")
            return
    raise ClusterTooSmall(_too_small(config, missing, cluster_nodes(), wait_s))


def _pending(missing: list[Demand]) -> str:
    names = [d.name for d in missing]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _too_small(config: Config, missing: list[Demand], nodes: list[dict[str, float]], wait_s: float) -> str:
    workers, learner = config.workers, config.learner
    has = {key: sum(node.get(key, 0.0) for node in nodes) for key in ("CPU", "GPU")}
    evaluation = config.eval.num_cpus if config.eval.every else 0.0
    learners = learner.num_learners
    asks_cpu = workers.num_workers * workers.num_cpus + learners * learner.num_cpus + evaluation
    if learners > 1 and learners * learner.num_gpus > has["GPU"]:
        problem = (
            f"learner.num_learners={learners} learners ask {learner.num_gpus:g} GPU each (learner.num_gpus) "
            f"and the cluster has {has['GPU']:g}; lower learner.num_learners or add GPU nodes"
        )
    elif learner.num_gpus > 0 and not any(node.get("GPU", 0.0) >= learner.num_gpus for node in nodes):
        problem = (
            f"the learner asks {learner.num_gpus:g} GPU (learner.num_gpus) but no node has "
            f"{'one' if learner.num_gpus <= 1 else 'that many'} (the cluster has {has['GPU']:g}); "
            "set learner.num_gpus: 0 or add a GPU node"
        )
    elif any(key not in ("CPU", "GPU") for d in missing for key in d.resources):
        key = next(k for d in missing for k in d.resources if k not in ("CPU", "GPU"))
        total = sum(node.get(key, 0.0) for node in nodes)
        problem = (
            f"{workers.num_workers} workers ask {workers.resources[key]:g} {key!r} each (workers.resources), "
            f"the cluster has {total:g}; change workers.resources or workers.num_workers, or add nodes with {key!r}"
        )
    elif asks_cpu > has["CPU"]:
        problem = (
            f"it asks {asks_cpu:g} CPUs (workers.num_workers={workers.num_workers} x workers.num_cpus="
            f"{workers.num_cpus:g} + "
            + (f"learner.num_learners={learners} x " if learners > 1 else "")
            + f"learner.num_cpus={learner.num_cpus:g}"
            + (f" + eval.num_cpus={evaluation:g}" if evaluation else "")
            + f") and the cluster has {has['CPU']:g}; lower those keys or add nodes"
        )
    else:
        largest = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
        problem = (
            f"no node has room for {missing[0].name} ({_bundle(missing[0].resources)}); the largest node has "
            f"{largest:g} CPUs; lower workers.num_cpus, learner.num_cpus or eval.num_cpus, or add larger nodes"
        )
    wait = "" if wait_s > 0 else " (with an autoscaler, set cluster.wait_for_resources_s to wait for nodes)"
    waited = f" after waiting {wait_s:g}s" if wait_s > 0 else ""
    return f"the cluster cannot hold this run{waited}: {problem}{wait}"


def _bundle(resources: dict[str, float]) -> str:
    return ", ".join(f"{value:g} {key}" for key, value in resources.items())


def _warn_oversubscribed(config: Config, log: Callable[[str], None]) -> None:
    """The embedded Ray gives every actor its CPUs even when the machine has fewer cores: say so
    when the workers alone ask more than the cores, since they then run slower than fewer would."""
    workers = config.workers
    asks = workers.num_workers * workers.num_cpus
    cores = os.cpu_count() or 1
    if asks > cores:
        log(
            f"WARNING: workers.num_workers={workers.num_workers} x workers.num_cpus={workers.num_cpus:g} ask "
            f"{asks:g} CPUs and this machine has {cores} cores: the workers share them, which is slower than "
            "fewer workers with more workers.envs_per_worker"
        )
