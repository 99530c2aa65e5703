"""The learners of a multi-agent run: one Learner per policy (its own network, normalizers,
buffer, optimizer and PPO settings), behind the one learner's interface, so both runtimes, the
learner actor, data-parallel ranks, checkpoints and resume drive them unchanged. Each policy
updates on its own agents' samples only; their versions move together.
"""

from __future__ import annotations

from trainer.core.agents import AgentsProbe
from trainer.core.config import Config
from trainer.core.messages import AgentRollouts, PolicySnapshot
from trainer.core.timing import PhaseTimer, is_phase
from trainer.learning.learner import Learner
from trainer.learning.opponent_pool import OpponentPool


class MultiLearner:
    """A Learner per policy. Tags: `policies/<name>/losses/...` per policy; the phase times
    (perf/*_s) summed over them; `losses/first_minibatch_ratio_dev`, the largest of them."""

    def __init__(
        self, config: Config, probe: AgentsProbe, rank: int = 0, world: int = 1, max_policy_lag: int = 0
    ) -> None:
        self.config, self.rank, self.world = config, rank, world
        self.learners = {
            name: Learner(group.config, group.probe, rank, world, max_policy_lag)
            for name, group in probe.groups.items()
        }
        self.timer = PhaseTimer()
        self.pool = None  # self-play's snapshots, starting with the initial policy
        if probe.self_play is not None and config.self_play is not None:
            self.pool = OpponentPool(config.self_play)
            self.pool.add(0, self.learners[config.self_play.policy].policy.state_dict())

    @property
    def lead(self) -> Learner:
        return next(iter(self.learners.values()))

    @property
    def version(self) -> int:
        return self.lead.version

    def join(self, address: str, port: int) -> None:
        """One process group for all the policies' collectives (each rank runs them in the same order)."""
        self.lead.join(address, port)
        for learner in self.learners.values():
            learner.collective = self.lead.collective

    def close(self) -> None:
        self.lead.close()
        for learner in self.learners.values():
            learner.collective = self.lead.collective

    def snapshot(self) -> PolicySnapshot:
        weights = {name: learner.snapshot().weights for name, learner in self.learners.items()}
        return PolicySnapshot(self.version, weights, self.pool.published() if self.pool is not None else None)

    def weights_state(self) -> dict:
        lead = self.lead
        return {
            "policies": {name: learner.weights_state() for name, learner in self.learners.items()},
            "version": lead.version,
            "iteration": lead.iteration,
            "env_steps": lead.env_steps // max(1, self._agents_per_env(lead)),
        } | ({"opponent_pool": self.pool.state_dict()} if self.pool is not None else {})

    def _agents_per_env(self, learner: Learner) -> int:
        return learner.config.workers.envs_per_worker // self.config.workers.envs_per_worker

    def optimizer_state(self) -> dict:
        return {name: learner.optimizer_state() for name, learner in self.learners.items()}

    def state_dict(self) -> dict:
        return {**self.weights_state(), "optimizer": self.optimizer_state()}

    def load_state_dict(self, state: dict) -> None:
        for name, learner in self.learners.items():
            part = dict(state["policies"][name])
            if "optimizer" in state:  # absent when it was lost with a learner's node
                part["optimizer"] = state["optimizer"][name]
            learner.load_state_dict(part)
        if self.pool is not None and "opponent_pool" in state:  # (a run that starts self-play on a resume has none)
            self.pool.load_state_dict(state["opponent_pool"])

    def update(self, rollouts: list[AgentRollouts]) -> dict[str, float]:
        """Each policy's update on its part of every worker's rollouts."""
        metrics: dict[str, float] = {}
        phases: dict[str, float] = self.timer.take()
        deviations, bf16 = [], []
        for name, learner in self.learners.items():
            part = learner.update([rollout.parts[name] for rollout in rollouts])
            for tag, value in part.items():
                if is_phase(tag):
                    phases[tag] = phases.get(tag, 0.0) + value
                else:
                    metrics[f"policies/{name}/{tag}"] = value
            deviations.append(part["losses/first_minibatch_ratio_dev"])
            bf16.append(part["perf/learner_bf16"])
            agent_steps = learner.collective.sum(learner.buffer.valid.sum())  # every rank's shard
            metrics[f"policies/{name}/charts/agent_steps"] = float(agent_steps.item())
        metrics["losses/first_minibatch_ratio_dev"] = max(deviations)
        metrics["perf/learner_bf16"] = max(bf16)
        if self.pool is not None:
            metrics |= self._self_play(rollouts)
        return metrics | phases

    def _self_play(self, rollouts: list[AgentRollouts]) -> dict[str, float]:
        """Every rank's episodes' results into the pool (so every rank keeps the same pool); a
        snapshot of the trained policy joins every self_play.add_every iterations."""
        outcomes = [outcome for part in self.lead.collective.gather([o for r in rollouts for o in r.outcomes])
                    for outcome in part]  # fmt: skip
        metrics = self.pool.record(outcomes)
        settings = self.config.self_play
        if self.lead.iteration % settings.add_every == 0:
            self.pool.add(self.version, self.learners[settings.policy].policy.state_dict())
            metrics["selfplay/pool_size"] = float(len(self.pool.members))
        return metrics


def merged_state(parts: list[dict]) -> dict:
    """One learner state (`weights_state` or `state_dict`) from those of learners that hold some
    of the policies each (learner.actor_per_policy): their policies and optimizers together, the
    self-play pool from the one that has it, the counters (the same in all) from the first."""
    merged = dict(parts[0])
    for key in ("policies", "optimizer"):
        if key in merged:
            merged[key] = {name: value for part in parts for name, value in part[key].items()}
    pools = [part["opponent_pool"] for part in parts if "opponent_pool" in part]
    if pools:
        merged["opponent_pool"] = pools[0]
    return merged
