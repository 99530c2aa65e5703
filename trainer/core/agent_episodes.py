"""Whole episodes of a PettingZoo env with a player in every seat: a trained policy, a uniformly
random legal player, or another checkpoint's policy. The code behind multi-agent evaluation
(during training and `trainer evaluate`) and the self-play benchmarks.

Results are per agent (each one's return) and, where one side plays another, per episode the
result of the evaluated side (+1 won, 0 drew, -1 lost: its agents' summed return against the
other side's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.core.acting import Acting
from trainer.core.action_masks import mask_sizes
from trainer.core.agent_envs import AgentEnv
from trainer.core.config import EnvConfig
from trainer.core.spec import ObsSpec
from trainer.core.video import frame_of


class NetworkPlayer:
    """A policy network acting one seat, its recurrent state its own."""

    def __init__(self, network, obs_spec: ObsSpec, action_space, deterministic: bool, generator) -> None:
        self.obs_spec, self.deterministic, self.generator = obs_spec, deterministic, generator
        self.acting = Acting(network, action_space, 1)

    def start(self) -> None:
        self.acting.start(1)

    def act(self, obs):
        action, _, _ = self.acting.act(self.obs_spec.stack([obs]), self.deterministic, self.generator)
        self.acting.ended(np.zeros(1, dtype=bool))
        return self.acting.env_actions(action)[0]


class RandomPlayer:
    """Uniformly random among the legal actions (all of them where the env gives no mask)."""

    def __init__(self, obs_spec: ObsSpec, action_space, seed: int) -> None:
        self.obs_spec, self.action_space = obs_spec, action_space
        self.rng = np.random.default_rng(seed)
        self.sizes = mask_sizes(action_space) if obs_spec.mask_key else None

    def start(self) -> None:
        pass

    def act(self, obs):
        if self.sizes is None:
            return self.action_space.sample()
        mask = np.asarray(obs[self.obs_spec.mask_key]).astype(bool)
        picks = [self.rng.choice(np.flatnonzero(part)) for part in np.split(mask, np.cumsum(self.sizes)[:-1])]
        return picks[0] if len(picks) == 1 else np.array(picks)


@dataclass
class AgentEpisodes:
    returns: dict[str, list[float]] = field(default_factory=dict)  # agent -> its return in each episode
    results: list[float] = field(default_factory=list)  # the evaluated side's +1 / 0 / -1, per episode
    lengths: list[int] = field(default_factory=list)  # env steps of each episode
    frames: list[np.ndarray] = field(default_factory=list)  # the first episode's, from its reset to its end
    fps: int = 30

    def summary(self) -> dict[str, float]:
        """Mean return per agent (`agents/<id>/return_mean`) and, where sides played, the rates."""
        scalars = {f"agents/{agent}/return_mean": float(np.mean(r)) for agent, r in self.returns.items()}
        if self.results:
            results = np.array(self.results)
            scalars["win_rate"] = float((results > 0).mean())
            scalars["draw_rate"] = float((results == 0).mean())
            scalars["loss_rate"] = float((results < 0).mean())
        return scalars


def play(
    env_config: EnvConfig,
    players: dict,
    episodes: int,
    seed: int,
    evaluated: tuple[str, ...] = (),
    record: bool = False,
) -> AgentEpisodes:
    """`episodes` whole episodes (episode k reset with seed + k), agent a acting with `players[a]`
    (players may be shared between agents only when they have no memory). `evaluated`: the agents
    whose side's result is recorded against all the others'. `record`: the first episode's frames."""
    env = AgentEnv(env_config, render_mode="rgb_array" if record else None)
    outcome = AgentEpisodes(fps=env.fps)
    try:
        for k in range(episodes):
            for player in {id(p): p for p in players.values()}.values():
                player.start()
            step = env.reset(seed=seed + k)
            totals = dict.fromkeys(env.possible_agents, 0.0)
            length = 0
            filming = record and k == 0
            while True:
                if filming:
                    outcome.frames.append(frame_of(env, env_config.id))
                with torch.inference_mode():
                    actions = {agent: players[agent].act(obs) for agent, obs in step.to_act.items()}
                step = env.step(actions)
                length += 1
                for agent, reward in step.rewards.items():
                    totals[agent] += reward
                if step.over:
                    if filming:  # the end, as a board game's last move leaves it
                        outcome.frames.append(frame_of(env, env_config.id))
                    break
            outcome.lengths.append(length)
            for agent, total in totals.items():
                outcome.returns.setdefault(agent, []).append(total)
            if evaluated:
                mine = sum(totals[a] for a in evaluated)
                theirs = sum(total for agent, total in totals.items() if agent not in evaluated)
                outcome.results.append(float(np.sign(mine - theirs)))
        return outcome
    finally:
        env.close()
