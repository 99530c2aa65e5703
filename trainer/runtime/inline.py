"""The in-process runtime: learner and workers in this process, no Ray."""

from __future__ import annotations

from trainer.core.agents import AgentsProbe
from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.messages import EpisodeStats, Rollout
from trainer.core.timing import PhaseTimer
from trainer.learning.learner import Learner
from trainer.learning.multi_learner import MultiLearner
from trainer.runtime.checkpoint import capture_rng, restore_rng, worker_rng_states
from trainer.runtime.stats import IterationStats, LearnerState
from workers.multi_agent_worker import make_rollout_worker


class InProcess:
    """Mixin: a learner behind the same handle the Ray runtime drives (trainer/runtime/base.py:
    LearnerHandle), here an update that is done when it is started."""

    restarts = 0  # it dies with this process

    def start_update(self, rollouts: list[Rollout]) -> dict[str, float]:
        return self.update(rollouts)

    def finish_update(self, pending: dict[str, float]) -> dict[str, float]:
        return pending

    def state(self) -> LearnerState:
        return LearnerState(self.weights_state(), self.optimizer_state())


class InProcessLearner(InProcess, Learner):
    pass


class InProcessMultiLearner(InProcess, MultiLearner):
    pass


class InlineRuntime:
    """Learner and workers in this process, no Ray: for debugging, profiling and fast tests.
    Workers collect between updates, never during one: no policy lag."""

    def __init__(self, config: Config, probe: Probe | AgentsProbe) -> None:
        learner = InProcessMultiLearner if isinstance(probe, AgentsProbe) else InProcessLearner
        self.learner = learner(config, probe, max_policy_lag=0)
        self.workers = [make_rollout_worker(config, i, probe) for i in range(config.workers.num_workers)]

    def iterate(self) -> IterationStats:
        snapshot = self.learner.snapshot()
        timer = PhaseTimer()
        with timer.phase("collect"):
            rollouts = [worker.collect(snapshot) for worker in self.workers]
        metrics = self.learner.finish_update(self.learner.start_update(rollouts)) | timer.take()
        episodes = EpisodeStats.concat([rollout.episodes for rollout in rollouts])
        return IterationStats(
            metrics, episodes, [rollout.timings for rollout in rollouts], worker_restarts=[0] * len(self.workers)
        )

    def policy_weights(self) -> LearnerState:
        return self.learner.state()

    def state_dict(self) -> dict:
        return {
            "learner": self.learner.state_dict(),
            "worker_rng": [worker.rng_state() for worker in self.workers],
            "rng": capture_rng(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state["learner"])
        for worker, rng in zip(self.workers, worker_rng_states(state, len(self.workers))):
            worker.resume(rng, state["learner"]["iteration"])
        restore_rng(state["rng"])

    def close(self) -> None:
        self.learner.close()
        for worker in self.workers:
            worker.close()
