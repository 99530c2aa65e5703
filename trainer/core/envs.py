"""Environment construction: gymnasium ids or `package.module:Class` entry points, vectorized.

Vector envs reset finished sub-envs in the same step (gymnasium's SAME_STEP autoreset), so the
observation returned after an episode ends is the next episode's first, and the final
observation of the ended one is in `info["final_obs"]` for the truncation bootstrap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from trainer.core.config import EnvConfig
from trainer.core.distributions import distribution_for
from trainer.core.errors import UserError
from trainer.core.policy import observation_dim


class MaskedVelocityCartPole(gym.ObservationWrapper):
    """CartPole that shows only cart position and pole angle: velocities must be inferred
    from history, so a memoryless policy cannot balance the pole for long."""

    def __init__(self, **kwargs) -> None:
        super().__init__(gym.make("CartPole-v1", **kwargs).unwrapped)
        self.observation_space = spaces.Box(
            low=self.env.observation_space.low[[0, 2]], high=self.env.observation_space.high[[0, 2]], dtype=np.float32
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]]


gym.register(
    "MaskedVelocityCartPole-v1",
    entry_point=MaskedVelocityCartPole,
    max_episode_steps=500,
    reward_threshold=475.0,
)


def make_env(config: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env from a registered id or an entry point, with the config's time limit."""
    kwargs = {**config.kwargs, "render_mode": render_mode} if render_mode else config.kwargs
    if ":" in config.id and "/" not in config.id.split(":")[0]:
        env = _from_entry_point(config.id, kwargs)
    else:
        env = _from_registry(config.id, kwargs)
    if config.max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
    return env


def _from_registry(env_id: str, kwargs: dict) -> gym.Env:
    try:
        # The passive checker re-wraps every step; the worker checks observations itself.
        return gym.make(env_id, disable_env_checker=True, **kwargs)
    except gym.error.Error as exc:
        raise UserError(f"env.id {env_id!r}: {exc}") from None
    except TypeError as exc:
        raise UserError(f"env.kwargs for {env_id!r} do not fit: {exc}") from None


def _from_entry_point(entry_point: str, kwargs: dict) -> gym.Env:
    module_name, _, attr = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"env.id {entry_point!r}: cannot import module {module_name!r} ({exc})") from None
    factory: Callable[..., gym.Env] | None = getattr(module, attr, None)
    if factory is None:
        raise UserError(f"env.id {entry_point!r}: module {module_name!r} has no attribute {attr!r}")
    try:
        env = factory(**kwargs)
    except TypeError as exc:
        raise UserError(f"env.kwargs for {entry_point!r} do not fit: {exc}") from None
    if not isinstance(env, gym.Env):
        raise UserError(f"env.id {entry_point!r} returned {type(env).__name__}, not a gymnasium.Env")
    return env


def make_vector_env(config: EnvConfig, num_envs: int) -> SyncVectorEnv:
    """E copies of the env stepped in this process; Box actions are clipped to the space."""

    def factory() -> gym.Env:
        env = make_env(config)
        if isinstance(env.action_space, spaces.Box):
            env = gym.wrappers.ClipAction(env)
        return env

    return SyncVectorEnv([factory] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)


def probe_env(config: EnvConfig) -> tuple[spaces.Space, spaces.Space, float | None]:
    """Observation space, action space and solved threshold, from one throwaway env; an
    unsupported space fails here, before anything is written."""
    env = make_env(config)
    try:
        observation_dim(env.observation_space)
        distribution_for(env.action_space)
        spec_threshold = env.spec.reward_threshold if env.spec is not None else None
        threshold = config.reward_threshold if config.reward_threshold is not None else spec_threshold
        return env.observation_space, env.action_space, threshold
    finally:
        env.close()


def to_env_actions(actions: np.ndarray, space: spaces.Space) -> np.ndarray:
    """Stored actions `[E, A]` -> what the vector env's step takes."""
    if isinstance(space, spaces.Discrete):
        return actions[:, 0] + int(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return actions + space.start
    return actions
