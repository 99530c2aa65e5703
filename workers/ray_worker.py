"""The rollout and evaluation workers as Ray actors: the same classes, plus (rollouts) a split
return so the driver can watch a collection (small info) while the rollout itself goes straight
to the learner."""

from __future__ import annotations

from dataclasses import dataclass

import ray

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


class RolloutWorkerActor(KeepsSetupError, RolloutWorker):
    """Create with `ray.remote(concurrency_groups=LIVENESS_GROUPS)`: `progress()` then answers on a
    thread of its own while a collection runs, so the driver can tell a slow env from a stuck one.
    An env that cannot be made or reset is the env's error, raised by the first collection."""

    def __init__(self, config: Config, worker_index: int, probe: Probe) -> None:
        set_up_process(config, "rollout worker")
        self.vector_steps = 0  # progress() answers also when the envs could not be built
        super().__init__(config, worker_index, probe)

    # The per-iteration calls record no Ray task events: at a few tasks an iteration, a long run
    # would grow the GCS's task-event table by ~4 MB a minute (up to Ray's 100k-task cap).
    @ray.method(num_returns=2, enable_task_events=False)
    def collect_split(self, snapshot: PolicySnapshot) -> tuple[RolloutInfo, Rollout]:
        self.raise_setup_error()
        rollout = self.collect(snapshot)
        return RolloutInfo(rollout.episodes, rollout.timings), rollout

    @ray.method(concurrency_group="liveness", enable_task_events=False)
    def progress(self) -> int:
        """Env steps taken so far (a vector step counts once): it grows while the worker is alive
        and its envs step, however long a whole rollout takes."""
        return self.vector_steps


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
