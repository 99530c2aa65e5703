"""The in-process runtime: learner and workers in this process, no Ray."""

from __future__ import annotations

import torch

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.messages import EpisodeStats
from trainer.core.timing import PhaseTimer
from trainer.learning.learner import Learner
from trainer.runtime.checkpoint import capture_rng, restore_rng, worker_rng_states
from trainer.runtime.stats import IterationStats, LearnerState
from workers.rollout_worker import RolloutWorker


class InlineRuntime:
    """Learner and workers in this process, no Ray: for debugging, profiling and fast tests."""

    def __init__(self, config: Config, probe: Probe) -> None:
        self.learner = Learner(config, probe.observation_space, probe.action_space)
        self.workers = [RolloutWorker(config, i) for i in range(config.workers.num_workers)]
        # One process for both sides, which take turns: the learner's thread count holds.
        torch.set_num_threads(config.learner.torch_threads)
        self.restarts = [0] * config.workers.num_workers  # in-process workers are never replaced
        self.learner_restarts = 0

    def iterate(self) -> IterationStats:
        snapshot = self.learner.snapshot()
        timer = PhaseTimer()
        with timer.phase("collect"):
            rollouts = [worker.collect(snapshot) for worker in self.workers]
        metrics = self.learner.learn(rollouts) | timer.take()
        episodes = EpisodeStats.concat([rollout.episodes for rollout in rollouts])
        return IterationStats(metrics, episodes, [rollout.timings for rollout in rollouts])

    def learner_state(self) -> LearnerState:
        """The learner's state now: what evaluation acts with (and keeps for best.pt)."""
        return LearnerState(self.learner.weights_state(), self.learner.optimizer_state())

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
