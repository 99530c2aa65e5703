"""PettingZoo envs for multi-agent runs: one env stepped through one interface, whether every
live agent acts at each step (the Parallel API) or one agent at a time (the AEC API's turns).

An AEC env whose metadata says it is parallelizable is converted with PettingZoo's own
`aec_to_parallel`; a turn-based one (board games) is stepped turn by turn, each step the
selected agent's. A step reports what the rollout worker needs per agent: the reward it got
since it last acted, whether it ended (with its final observation, for a truncation's bootstrap),
and which agents act next with what they see. An env's episode is over when it has no agent
left; the worker then resets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from trainer.core.config import EnvConfig
from trainer.core.env_making import EnvBuildError, entry_point, register_plugins
from trainer.core.errors import UserError


class NonFiniteError(UserError):
    """The env gave an agent a NaN or inf reward or observation value."""


@dataclass
class AgentStep:
    """What one env step (or reset) did, per agent."""

    to_act: dict[str, Any]  # agent -> its observation: the agents that act at the next step
    rewards: dict[str, float] = field(default_factory=dict)  # reward since the agent last acted
    ended: dict[str, tuple[Any, bool, bool]] = field(
        default_factory=dict
    )  # agent -> (final obs, terminated, truncated)
    over: bool = False  # no agent left: the episode is over


def pettingzoo_kind(env: object) -> str | None:
    """`parallel` or `aec` for a PettingZoo env or env class, None for anything else."""
    try:
        from pettingzoo import AECEnv, ParallelEnv
    except ImportError:  # then nothing made here is a PettingZoo env
        return None
    cls = env if isinstance(env, type) else type(env)
    if issubclass(cls, ParallelEnv):
        return "parallel"
    return "aec" if issubclass(cls, AECEnv) else None


def made_agent_env(config: EnvConfig) -> Any | None:
    """The PettingZoo env `env.id` makes, or None where it names no entry point that makes one.
    A factory function is called to find out; what it made is kept for the probe (AgentEnv's
    `made`), so the env is made once at start-up."""
    register_plugins(config)
    factory = entry_point(config.id)
    if factory is None or (isinstance(factory, type) and pettingzoo_kind(factory) is None):
        return None
    env = _build(config)
    if pettingzoo_kind(env) is None:
        env.close()
        return None
    return env


def _build(config: EnvConfig) -> Any:
    factory = entry_point(config.id)
    try:
        return factory(**config.kwargs)
    except TypeError as exc:
        raise EnvBuildError(f"env.kwargs for {config.id!r} do not fit: {exc}") from None
    except Exception as exc:
        raise EnvBuildError(f"env {config.id!r} raised {type(exc).__name__} while being made: {exc}") from None


class AgentEnv:
    """One PettingZoo env, Parallel or AEC (turn-based unless it can be converted)."""

    def __init__(self, config: EnvConfig, made: Any | None = None, render_mode: str | None = None) -> None:
        """`made`: the env `made_agent_env` already made from this config, else one is made here
        (with `render_mode`, PettingZoo's constructor argument, where one is given)."""
        register_plugins(config)
        if render_mode is not None:
            config = config.model_copy(update={"kwargs": config.kwargs | {"render_mode": render_mode}})
        env = _build(config) if made is None else made
        kind = pettingzoo_kind(env)
        if kind is None:
            raise EnvBuildError(f"env.id {config.id!r} returned {type(env).__name__}, not a PettingZoo env")
        if kind == "aec" and env.metadata.get("is_parallelizable", False):
            from pettingzoo.utils.conversions import aec_to_parallel

            env, kind = aec_to_parallel(env), "parallel"
        self.env, self.id = env, config.id
        self.turn_based = kind == "aec"
        self.limit, self.steps = config.max_episode_steps, 0  # env.max_episode_steps, in steps (turns)
        self.possible_agents: list[str] = [str(agent) for agent in env.possible_agents]
        self.names = {str(agent): agent for agent in env.possible_agents}  # agent ids need not be strings

    @property
    def fps(self) -> int:
        """Frames a second of the env's own renderer (its metadata's render_fps)."""
        return int(self.env.metadata.get("render_fps", 30))

    def render(self) -> Any:
        return self.env.render()

    def observation_space(self, agent: str) -> spaces.Space:
        return self.env.observation_space(self.names[agent])

    def action_space(self, agent: str) -> spaces.Space:
        return self.env.action_space(self.names[agent])

    def reset(self, seed: int | None = None) -> AgentStep:
        self.steps = 0
        if self.turn_based:
            self.env.reset(seed=seed)
            return self._finite(self._next_turn())
        obs, _ = self.env.reset(seed=seed)
        return self._finite(AgentStep({str(agent): value for agent, value in obs.items()}))

    def step(self, actions: dict[str, Any]) -> AgentStep:
        step = self._step(actions)
        self.steps += 1
        if self.limit is not None and self.steps >= self.limit and not step.over:
            step = self._time_up(step)
        return self._finite(step)

    def _time_up(self, step: AgentStep) -> AgentStep:
        """env.max_episode_steps reached: every agent still in the env ends truncated, with what
        it sees now (in a turn-based game, those waiting for their turn too), and the episode is over."""
        if not self.turn_based:
            ended = {name: (seen, False, True) for name, seen in step.to_act.items()}
            return AgentStep({}, step.rewards, step.ended | ended, over=True)
        env, rewards, ended = self.env, dict(step.rewards), dict(step.ended)
        for agent in env.agents:
            name = str(agent)
            if name not in step.to_act:  # waiting for its turn: the reward since its last move is still the env's
                rewards[name] = rewards.get(name, 0.0) + float(env._cumulative_rewards.get(agent, 0.0))
            ended[name] = (env.observe(agent), bool(env.terminations.get(agent, False)), True)
        return AgentStep({}, rewards, ended, over=True)

    def _step(self, actions: dict[str, Any]) -> AgentStep:
        if self.turn_based:
            (agent,) = actions
            self.env.step(actions[agent])
            return self._next_turn()
        obs, rewards, terminated, truncated, _ = self.env.step({self.names[a]: act for a, act in actions.items()})
        ended = {
            str(agent): (obs.get(agent), bool(terminated.get(agent, False)), bool(truncated.get(agent, False)))
            for agent in obs
            if terminated.get(agent, False) or truncated.get(agent, False)
        }
        to_act = {str(agent): value for agent, value in obs.items() if str(agent) not in ended}
        rewards = {str(agent): float(value) for agent, value in rewards.items()}
        return AgentStep(to_act, rewards, ended, over=not self.env.agents)

    def _next_turn(self) -> AgentStep:
        """Go on to the next agent that acts: agents whose turn comes after they ended are
        stepped out (with None, as the AEC API asks), their end reported."""
        env, rewards, ended = self.env, {}, {}
        while env.agents:
            agent = str(env.agent_selection)
            obs, reward, terminated, truncated, _ = env.last()
            rewards[agent] = rewards.get(agent, 0.0) + float(reward)
            if not (terminated or truncated):
                return AgentStep({agent: obs}, rewards, ended)
            ended[agent] = (obs, bool(terminated), bool(truncated))
            env.step(None)
        return AgentStep({}, rewards, ended, over=True)

    def _finite(self, step: AgentStep) -> AgentStep:
        """`step` unchanged, or one line naming the agent whose reward or observation is not
        finite (the learner's check of the rollout could name only the field)."""
        for agent, reward in step.rewards.items():
            if not np.isfinite(reward):
                raise NonFiniteError(f"env {self.id!r} returned a reward of {reward} for agent {agent!r}")
        seen = [*step.to_act.items(), *((agent, ended[0]) for agent, ended in step.ended.items())]
        for agent, obs in seen:
            if not _all_finite(obs):
                raise NonFiniteError(f"env {self.id!r} returned a NaN or inf observation value for agent {agent!r}")
        return step

    def close(self) -> None:
        self.env.close()


def _all_finite(obs: Any) -> bool:
    """Every float in an observation (nested dicts and tuples included; None: none) is finite."""
    if isinstance(obs, dict):
        return all(_all_finite(value) for value in obs.values())
    if isinstance(obs, tuple | list):
        return all(_all_finite(value) for value in obs)
    if obs is None:
        return True
    values = np.asarray(obs)
    return values.dtype.kind != "f" or bool(np.isfinite(values).all())
