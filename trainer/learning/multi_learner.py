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
        return PolicySnapshot(
            self.version, {name: learner.snapshot().weights for name, learner in self.learners.items()}
        )

    def weights_state(self) -> dict:
        lead = self.lead
        return {
            "policies": {name: learner.weights_state() for name, learner in self.learners.items()},
            "version": lead.version,
            "iteration": lead.iteration,
            "env_steps": lead.env_steps // max(1, self._agents_per_env(lead)),
        }

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
            metrics[f"policies/{name}/charts/agent_steps"] = float(learner.buffer.valid.sum().item())
        metrics["losses/first_minibatch_ratio_dev"] = max(deviations)
        metrics["perf/learner_bf16"] = max(bf16)
        return metrics | phases
