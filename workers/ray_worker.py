"""The rollout and evaluation workers as Ray actors: rollout workers in host processes (one or
several to a process) with a split return, so the driver can watch a collection (small infos)
while the rollouts themselves go straight to the learner."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ray
import torch

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.messages import EpisodeStats, PolicySnapshot, Rollout
from trainer.core.process import set_up_process
from workers.actor import KeepsSetupError
from workers.evaluation_worker import EvalOutcome, EvaluationWorker
from workers.multi_agent_worker import make_rollout_worker

LIVENESS_GROUPS = {"liveness": 1}


@dataclass(frozen=True)
class RolloutInfo:
    """The driver's view of a finished collection; the tensors stay in the object store."""

    episodes: EpisodeStats
    timings: dict[str, float]


class RolloutHost:
    """The rollout workers of one process (workers.per_process), collecting together: each on a
    thread of its own when there are several (threads pay where envs wait: the GIL is free while
    they do). One call a host per iteration, not one a worker: Ray's per-call cost is paid once."""

    def __init__(self, config: Config, indices: range, probe: Probe) -> None:
        set_up_process(config, "rollout worker")
        self.workers: list = []  # progress() answers also when the envs could not be built
        self.threads = ThreadPoolExecutor(len(indices)) if len(indices) > 1 else None
        for index in indices:
            self.workers.append(make_rollout_worker(config, index, probe))

    def collect_all(self, snapshot: PolicySnapshot) -> list[Rollout]:
        if self.threads is None:
            return [worker.collect(snapshot) for worker in self.workers]
        return list(self.threads.map(lambda worker: worker.collect(snapshot), self.workers))

    def rng_states(self) -> list[torch.Tensor]:
        return [worker.rng_state() for worker in self.workers]

    def resume(self, rng_states: list[torch.Tensor | None], iteration: int) -> None:
        for worker, rng_state in zip(self.workers, rng_states, strict=True):
            worker.resume(rng_state, iteration)


class RolloutHostActor(KeepsSetupError, RolloutHost):
    """Create with `ray.remote(concurrency_groups=LIVENESS_GROUPS)`: `progress()` then answers on a
    thread of its own while a collection runs, so the driver can tell a slow env from a stuck one.
    An env that cannot be made or reset is the env's error, raised by the first collection."""

    # The per-iteration calls record no Ray task events: at a few tasks an iteration, a long run
    # would grow the GCS's task-event table by ~4 MB a minute (up to Ray's 100k-task cap).
    @ray.method(enable_task_events=False)
    def collect_split(self, snapshot: PolicySnapshot) -> tuple:
        """Call with `.options(num_returns=1 + workers)`: the workers' infos in one list, then
        each worker's rollout as an object of its own."""
        self.raise_setup_error()
        rollouts = self.collect_all(snapshot)
        return [RolloutInfo(rollout.episodes, rollout.timings) for rollout in rollouts], *rollouts

    @ray.method(concurrency_group="liveness", enable_task_events=False)
    def progress(self) -> int:
        """The workers' env steps so far (a vector step counts once): it grows while they are
        alive and their envs step, however long a whole rollout takes."""
        return sum(worker.vector_steps for worker in self.workers)


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
