"""Evaluating a multi-agent run's policies: every agent acting with its policy, or the self-play
policy against a fixed opponent (`eval.opponent`: `random`, a uniformly random legal player, or
`CHECKPOINT[:policy]`, another run's policy, loaded into the probe at start) in every seat it
trains in. What evaluation during training and `trainer evaluate` of a multi-agent checkpoint run.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.core.agent_episodes import AgentEpisodes, NetworkPlayer, RandomPlayer, play
from trainer.core.agents import AgentsProbe
from trainer.core.config import Config
from trainer.core.policy import build_policy


class AgentEvaluator:
    """The networks of a multi-agent run's policies (loaded with each evaluation's weights) and
    the fixed opponent, if any, built once."""

    def __init__(self, config: Config, probe: AgentsProbe) -> None:
        self.config, self.probe = config, probe
        self.networks = {}
        for name, group in probe.groups.items():
            self.networks[name] = build_policy(group.probe.obs_spec, group.probe.action_space, group.config)
            self.networks[name].requires_grad_(False)
        self.opponent = None  # a checkpoint's policy (eval.opponent), as preflight loaded it into the probe
        if probe.eval_opponent is not None:
            seats = probe.groups[probe.self_play.policy].probe
            self.opponent = build_policy(seats.obs_spec, seats.action_space, probe.eval_opponent["config"])
            self.opponent.load_state_dict(probe.eval_opponent["weights"])
            self.opponent.requires_grad_(False)

    def load(self, policies: dict) -> None:
        """A learner state's policies (`learner_state["policies"]`)."""
        for name, network in self.networks.items():
            network.load_state_dict(policies[name]["policy"])

    def evaluate(
        self, episodes: int, deterministic: bool, seed: int, record: bool = False
    ) -> tuple[dict[str, float], list[float], AgentEpisodes | None]:
        """Scalars (without the eval/ prefix), the returns behind `return_mean` (what best.pt
        follows): every agent's per episode, or against an opponent the evaluated side's; and with
        `record` the episodes whose first one was filmed. The scalars: each agent's mean return,
        and against an opponent the win, draw and loss rates in each seat it trains in
        (`as_<agent>/...`) and overall."""
        generator = torch.Generator().manual_seed(seed)
        if self.config.eval.opponent is None:
            players = {agent: self._player(agent, deterministic, generator) for agent in self.probe.agents}
            outcome = play(self.config.eval_env, players, episodes, seed, record=record)
            returns = [r for agent_returns in outcome.returns.values() for r in agent_returns]
            return outcome.summary() | _moments(returns, outcome.lengths), returns, outcome if record else None
        seats = self.probe.self_play
        sides = [seats.sides(False)] + ([seats.sides(True)] if seats.swap else [])
        scalars, results, returns, lengths, filmed = {}, [], [], [], None
        for index, (trained, others) in enumerate(sides):
            players = {agent: self._player(agent, deterministic, generator) for agent in trained}
            players |= {agent: self._opponent(agent, deterministic, generator, seed) for agent in others}
            count = (episodes + index) // len(sides)
            filming = record and index == 0  # the trained policy in its first seat
            outcome = play(self.config.eval_env, players, count, seed + index * episodes, trained, record=filming)
            filmed = outcome if filming else filmed
            scalars |= {f"as_{trained[0]}/{key}": value for key, value in _rates(outcome).items()}
            results += outcome.results
            lengths += outcome.lengths
            returns += [sum(outcome.returns[agent][k] for agent in trained) for k in range(count)]
        return scalars | _rates(AgentEpisodes(results=results)) | _moments(returns, lengths), returns, filmed

    def _player(self, agent: str, deterministic: bool, generator) -> NetworkPlayer:
        name = self.probe.policy_of(agent)
        group = self.probe.groups[name].probe
        return NetworkPlayer(self.networks[name], group.obs_spec, group.action_space, deterministic, generator)

    def _opponent(self, agent: str, deterministic: bool, generator, seed: int):
        group = self.probe.groups[self.probe.policy_of(agent)].probe
        if self.opponent is None:
            return RandomPlayer(group.obs_spec, group.action_space, seed)
        return NetworkPlayer(self.opponent, group.obs_spec, group.action_space, deterministic, generator)


def _moments(returns: list[float], lengths: list[int]) -> dict[str, float]:
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
    }


def _rates(outcome: AgentEpisodes) -> dict[str, float]:
    return {key: value for key, value in outcome.summary().items() if key.endswith("_rate")}
