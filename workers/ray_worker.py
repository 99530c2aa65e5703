"""The rollout and evaluation workers as Ray actors: the same classes, plus (rollouts) a split
return so the driver can watch a collection (small info) while the rollout itself goes straight
to the learner."""

from __future__ import annotations

from dataclasses import dataclass

import ray
import torch

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.messages import EpisodeStats, PolicySnapshot, Rollout
from trainer.core.process import set_up_process
from workers.actor import KeepsSetupError
from workers.evaluation_worker import EvalOutcome, EvaluationWorker
from workers.rollout_worker import RolloutWorker

LIVENESS_GROUPS = {"liveness": 1}


@dataclass(frozen=True)
class RolloutInfo:
    """The driver's view of a finished collection; the tensors stay in the object store."""

    episodes: EpisodeStats
    timings: dict[str, float]


def worker_group(index: int) -> str:
    """The concurrency group (one thread) of rollout worker `index` in its host: its calls run
    one after another, in the order sent, as on an actor of its own."""
    return f"worker {index}"


def host_groups(indices: range) -> dict[str, int]:
    """Create a host with `ray.remote(concurrency_groups=host_groups(indices))`: a thread per
    worker, and one for `progress()`, which then answers while collections run, so the driver
    can tell a slow env from a stuck one."""
    return LIVENESS_GROUPS | {worker_group(index): 1 for index in indices}


class RolloutHost:
    """Rollout workers in one process (workers.per_process), each called on its own thread
    with its global index: `host.collect_split.options(concurrency_group=worker_group(i))
    .remote(i, snapshot)`. Threads pay where envs wait: the GIL is free while they do."""

    def __init__(self, config: Config, indices: range, probe: Probe) -> None:
        set_up_process(config, "rollout worker")
        self.workers: dict[int, RolloutWorker] = {}  # progress() answers also when the envs could not be built
        for index in indices:
            self.workers[index] = RolloutWorker(config, index, probe)

    def rng_state(self, index: int) -> torch.Tensor:
        return self.workers[index].rng_state()

    def resume(self, index: int, rng_state: torch.Tensor | None, iteration: int) -> None:
        self.workers[index].resume(rng_state, iteration)


class RolloutHostActor(KeepsSetupError, RolloutHost):
    """An env that cannot be made or reset is the env's error, raised by the first collection."""

    # The per-iteration calls record no Ray task events: at a few tasks an iteration, a long run
    # would grow the GCS's task-event table by ~4 MB a minute (up to Ray's 100k-task cap).
    @ray.method(num_returns=2, enable_task_events=False)
    def collect_split(self, index: int, snapshot: PolicySnapshot) -> tuple[RolloutInfo, Rollout]:
        self.raise_setup_error()
        rollout = self.workers[index].collect(snapshot)
        return RolloutInfo(rollout.episodes, rollout.timings), rollout

    @ray.method(concurrency_group="liveness", enable_task_events=False)
    def progress(self, index: int) -> int:
        """Worker `index`'s env steps so far (a vector step counts once): it grows while the
        worker is alive and its envs step, however long a whole rollout takes."""
        worker = self.workers.get(index)
        return worker.vector_steps if worker is not None else 0


class EvaluationActor(KeepsSetupError, EvaluationWorker):
    """The evaluation worker as a Ray actor, at the rollout workers' lower CPU priority; an eval
    env that cannot be made is kept and raised by the first evaluation, as the env's error."""

    def __init__(self, config: Config, probe: Probe) -> None:
        set_up_process(config, "evaluation worker")
        super().__init__(config, probe)

    @ray.method(enable_task_events=False)
    def evaluate(self, learner_state: dict, record: bool = False) -> EvalOutcome:
        self.raise_setup_error()
        return super().evaluate(learner_state, record)
