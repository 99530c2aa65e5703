"""The rollout worker as a Ray actor: the same class, plus a split return so the driver can
watch a collection (small info) while the rollout itself goes straight to the learner."""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from trainer.core.config import Config
from trainer.core.messages import EpisodeStats, PolicySnapshot, Rollout
from workers.rollout_worker import RolloutWorker


@dataclass(frozen=True)
class RolloutInfo:
    """The driver's view of a finished collection; the tensors stay in the object store."""

    worker_index: int
    version: int
    episodes: EpisodeStats
    timings: dict[str, float]


class RolloutWorkerActor(RolloutWorker):
    def __init__(self, config: Config, worker_index: int) -> None:
        os.nice(config.workers.nice)  # see WorkersConfig.nice: the learner goes first on shared cores
        super().__init__(config, worker_index)

    @ray.method(num_returns=2)
    def collect_split(self, snapshot: PolicySnapshot) -> tuple[RolloutInfo, Rollout]:
        rollout = self.collect(snapshot)
        return RolloutInfo(self.index, rollout.version, rollout.episodes, rollout.timings), rollout

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()
