"""A multi-agent run's learners with `learner.actor_per_policy`: a LearnerGroup per policy (its
actor a MultiLearnerActor holding that policy alone, with num_learners ranks of its own where
asked), all updating at the same time, behind the one LearnerGroup's calls. They share the
learner's resources (learner.num_cpus and num_gpus split evenly), so the run asks the cluster for
what it would ask with one actor.

Every group gets every worker's rollouts and takes its policy's part. The driver joins their
snapshots into one for the workers (each iteration: the weights, which it holds a copy of anyway)
and their states into one for evaluation and checkpoints (when those ask). The groups update in
lockstep (same version, iteration and env steps); a dead one has all of them rebuilt from their
newest states, which are of the same iteration.
"""

from __future__ import annotations

from collections.abc import Callable

import ray

from trainer.core.agents import AgentsProbe
from trainer.core.config import Config, load_config
from trainer.core.envs import Probe
from trainer.core.messages import PolicySnapshot
from trainer.learning.multi_learner import merged_state
from trainer.runtime.learner_group import LearnerFailedError, LearnerGroup, LearnerLost
from trainer.runtime.stats import LearnerState


def joined_snapshot(snapshots: list[PolicySnapshot]) -> PolicySnapshot:
    weights = {name: part for snapshot in snapshots for name, part in snapshot.weights.items()}
    opponents = next((snapshot.opponents for snapshot in snapshots if snapshot.opponents is not None), None)
    return PolicySnapshot(snapshots[0].version, weights, opponents)


class PolicyLearners:
    """LearnerGroup's interface over a LearnerGroup per policy."""

    def __init__(self, config: Config, probe: AgentsProbe, max_policy_lag: int, log: Callable[[str], None]) -> None:
        self.config, self.log = config, log
        share = len(probe.groups)  # the learner's CPUs and GPUs, split between its policies' actors
        part = load_config(config, [f"learner.num_cpus={config.learner.num_cpus / share}",
                                    f"learner.num_gpus={config.learner.num_gpus / share}"])  # fmt: skip
        self.groups = {name: LearnerGroup(part, probe.only(name), max_policy_lag, log) for name in probe.groups}
        self.restarts = 0

    def wait_ready(self) -> None:
        for group in self.groups.values():
            group.wait_ready()

    def owns(self, exc: BaseException) -> bool:
        return any(group.owns(exc) for group in self.groups.values())

    def snapshot(self):
        """The policies' weights in one snapshot, in the object store (a dead learner: LearnerLost)."""
        parts = [(group, group.snapshot()) for group in self.groups.values()]
        return ray.put(joined_snapshot([group.get(ref) for group, ref in parts]))

    def wait_for(self, ref) -> None:
        pass  # snapshot() returns once it exists

    def start_update(self, rollout_refs: list) -> dict[str, list]:
        return {name: group.start_update(rollout_refs) for name, group in self.groups.items()}

    def finish_update(self, refs: dict[str, list]) -> dict[str, float]:
        """Every group's metrics (a tag that several give, such as a phase time, at its largest:
        they ran at the same time); every group is waited for before a lost one is reported."""
        metrics: dict[str, float] = {}
        lost = None
        before = {name: (group.newest, group.loaded_state) for name, group in self.groups.items()}
        for name, group in self.groups.items():
            try:
                for tag, value in group.finish_update(refs[name]).items():
                    metrics[tag] = max(value, metrics.get(tag, value))
            except LearnerLost as exc:
                lost = lost or exc
        if lost is not None:  # the groups that updated go back with the others: the rebuild retries the iteration
            for name, group in self.groups.items():
                group.newest, group.loaded_state = before[name]
            raise lost
        return metrics

    def state(self) -> LearnerState:
        """The newest state, joined (for evaluation and checkpoints)."""
        full = self.state_dict()
        return LearnerState(ray.put({k: v for k, v in full.items() if k != "optimizer"}), ray.put(full["optimizer"]))

    def state_dict(self) -> dict:
        return merged_state([group.state_dict() for group in self.groups.values()])

    def load_state_dict(self, state: dict) -> None:
        """Each group takes its policy's part of the whole state."""
        for group in self.groups.values():
            group.load_state_dict(state)

    def rebuild(self, reason: str) -> None:
        """A policy's learner died: every group is started again from its newest state (theirs are
        of one iteration, so the policies stay in step); stop past learner.max_restarts."""
        self.restarts += 1
        limit = self.config.learner.max_restarts
        if self.restarts > limit:
            raise LearnerFailedError(
                f"the learner died ({reason}) with its learner.max_restarts={limit} rebuilds used up"
            )
        for name, group in self.groups.items():
            group.respawn(lambda source, name=name: f"the learner died ({reason}); rebuilding policy {name!r}'s from "
                          f"{source} (restart {self.restarts}/{limit})")  # fmt: skip

    def close(self) -> None:
        for group in self.groups.values():
            group.close()

    def kill(self) -> None:
        for group in self.groups.values():
            group.kill()


def learner_for(
    config: Config, probe: Probe | AgentsProbe, max_policy_lag: int, log: Callable[[str], None]
) -> LearnerGroup | PolicyLearners:
    """The run's learner: an actor per policy where learner.actor_per_policy asks and there are
    several, else one LearnerGroup (one actor, or its data-parallel ranks)."""
    if config.learner.actor_per_policy and isinstance(probe, AgentsProbe) and len(probe.groups) > 1:
        return PolicyLearners(config, probe, max_policy_lag, log)
    return LearnerGroup(config, probe, max_policy_lag, log)
