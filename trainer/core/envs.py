"""Environment construction: gymnasium ids (plugins registered on the way), `module:EnvId`, or
`package.module:Class` entry points; the config's wrappers; vectorized.

Every process that builds an env (each Ray worker, evaluation, export) goes through `make_env`,
so plugin registration and wrappers happen there too, not only in the driver. Vector envs reset
finished sub-envs in the same step (gymnasium's SAME_STEP autoreset), so the observation returned
after an episode ends is the next episode's first, and the final observation of the ended one is
in `info["final_obs"]` for the truncation bootstrap. Episode statistics are recorded right above
the env and its time limit, so returns are the env's own (whole games, unclipped rewards).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from trainer.core import wrappers as own_wrappers
from trainer.core.config import EnvConfig, PolicyConfig, WrapperConfig
from trainer.core.distributions import distribution_for
from trainer.core.errors import UserError
from trainer.core.spec import ObsSpec


@dataclass(frozen=True)
class Plugin:
    """A package whose env ids gymnasium finds only after it has registered them."""

    module: str
    extra: str
    register: Callable[[object], None]


PLUGINS = {
    "ALE/": Plugin("ale_py", "atari", lambda module: gym.register_envs(module)),
    "MiniGrid-": Plugin("minigrid", "minigrid", lambda module: None),  # registers on import
    "BabyAI-": Plugin("minigrid", "minigrid", lambda module: None),
    "MinAtar/": Plugin("minatar", "minatar", lambda module: importlib.import_module("minatar.gym").register_envs()),
}
PACKAGE_NAMES = {"ale_py": "ale-py", "minigrid": "minigrid", "minatar": "MinAtar"}


class EnvBuildError(UserError):
    """The env could not be made, reset or stepped as configured."""


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


_registered: set[str] = set()  # plugin modules that registered their ids in this process


def register_plugins(config: EnvConfig) -> None:
    """Import `env.imports` and the plugin package an id's prefix names, so gymnasium knows the id
    (once per process: registering twice makes gymnasium warn about every id)."""
    for name in config.imports:
        _import(name, f"env.imports {name!r}")
    for prefix, plugin in PLUGINS.items():
        if config.id.startswith(prefix) and plugin.module not in _registered:
            plugin.register(_import(plugin.module, f"env.id {config.id!r}", plugin.extra))
            _registered.add(plugin.module)


def _import(name: str, what: str, extra: str | None = None):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = PACKAGE_NAMES.get(name.split(".")[0], name)
        remedy = f"pip install 'ray-ppo-trainer[{extra}]'" if extra else f"install {package}"
        raise EnvBuildError(f"{what} needs {package}, which is not installed ({exc}): {remedy}") from None


def ensure_registered(config: EnvConfig, spec: gym.envs.registration.EnvSpec | None) -> None:
    """Make `env.id` known in this process: its plugin registers it, else the registration the
    driver had (e.g. made from a script) is copied in."""
    register_plugins(config)
    if spec is not None and spec.id not in gym.registry:
        gym.registry[spec.id] = spec


def make_env(config: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env from a registered id or an entry point, with the config's time limit and wrappers."""
    register_plugins(config)
    if render_mode == "rgb_array":  # frames off screen: pygame-drawn envs need no display (and say so)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    kwargs = {**config.kwargs, "render_mode": render_mode} if render_mode else config.kwargs
    factory = _entry_point(config.id)
    env = _from_entry_point(config.id, factory, kwargs) if factory else _from_registry(config.id, kwargs)
    if config.max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    for index, wrapper in enumerate(config.wrappers):
        env = _wrap(env, wrapper, f"env.wrappers[{index}] ({wrapper.name})")
    return env


def _entry_point(env_id: str) -> Callable[..., gym.Env] | None:
    """The factory of `package.module:Class`; None for registry ids, also gymnasium's `module:EnvId`."""
    module_name, sep, attr = env_id.partition(":")
    if not sep or "/" in module_name:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvBuildError(f"env.id {env_id!r}: cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None) if attr.isidentifier() else None
    if factory is None and attr not in gym.registry:
        raise EnvBuildError(
            f"env.id {env_id!r}: module {module_name!r} has no attribute {attr!r} and registers no env id {attr!r}"
        )
    return factory


def _from_registry(env_id: str, kwargs: dict) -> gym.Env:
    try:
        # The passive checker re-wraps every step; the worker checks observations itself.
        return gym.make(env_id, disable_env_checker=True, **kwargs)
    except gym.error.NameNotFound as exc:
        hint = f"; plugin ids start with {', '.join(PLUGINS)}, others need env.imports: [package]"
        raise EnvBuildError(f"env.id {env_id!r}: {exc}{hint}") from None
    except gym.error.Error as exc:
        raise EnvBuildError(f"env.id {env_id!r}: {exc}") from None
    except TypeError as exc:
        raise EnvBuildError(f"env.kwargs for {env_id!r} do not fit: {exc}") from None
    except Exception as exc:  # the env's own constructor failed: name it
        raise EnvBuildError(f"env {env_id!r} raised {type(exc).__name__} while being made: {exc}") from None


def _from_entry_point(entry_point: str, factory: Callable[..., gym.Env], kwargs: dict) -> gym.Env:
    try:
        env = factory(**kwargs)
    except TypeError as exc:
        raise EnvBuildError(f"env.kwargs for {entry_point!r} do not fit: {exc}") from None
    except Exception as exc:
        raise EnvBuildError(f"env {entry_point!r} raised {type(exc).__name__} while being made: {exc}") from None
    if not isinstance(env, gym.Env):
        raise EnvBuildError(f"env.id {entry_point!r} returned {type(env).__name__}, not a gymnasium.Env")
    return env


def _wrap(env: gym.Env, wrapper: WrapperConfig, where: str) -> gym.Env:
    if ":" in wrapper.name:
        module_name, _, attr = wrapper.name.partition(":")
        cls = getattr(_import(module_name, where), attr, None)
    else:
        cls = getattr(gym.wrappers, wrapper.name, None) or getattr(own_wrappers, wrapper.name, None)
    if not isinstance(cls, type):
        raise EnvBuildError(
            f"{where}: no such wrapper; give a class of gymnasium.wrappers (e.g. AtariPreprocessing), "
            "EpisodicLife, FireReset, or an entry point 'package.module:Class'"
        )
    try:
        return cls(env, **wrapper.kwargs)
    except Exception as exc:
        raise EnvBuildError(f"{where}: {type(exc).__name__}: {exc}") from None


class CheckObservations(gym.ObservationWrapper):
    """Stops with one clear line when an observation stops fitting the env's observation space
    (a changed shape or dtype, a Dict key gone), instead of a failure deep in the batching."""

    def __init__(self, env: gym.Env, obs_spec: ObsSpec) -> None:
        super().__init__(env)
        self.obs_spec = obs_spec

    def observation(self, observation):
        problem = self.obs_spec.mismatch(observation)
        if problem is not None:
            raise ObservationMismatch(problem)
        return observation


class ObservationMismatch(UserError):
    """An observation that no longer fits the observation space the run started with."""


def make_vector_env(config: EnvConfig, num_envs: int, render_first: bool = False) -> SyncVectorEnv:
    """E copies of the env stepped in this process (actions are converted and clipped by the
    acting loop, trainer/core/acting.py); `render_first`: env 0 renders RGB frames."""

    def factory(render_mode: str | None = None) -> gym.Env:
        env = make_env(config, render_mode=render_mode)
        obs_spec = ObsSpec.from_space(env.observation_space, config.id)
        # A flat float vector needs no check per step: the vector env's batching refuses another
        # shape itself, and any float dtype is converted anyway.
        if not obs_spec.single_vector:
            env = CheckObservations(env, obs_spec)
        return env

    factories = [lambda i=i: factory("rgb_array" if render_first and i == 0 else None) for i in range(num_envs)]
    return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)


@dataclass(frozen=True)
class Probe:
    """What one throwaway env tells before anything runs."""

    observation_space: spaces.Space
    action_space: spaces.Space
    reward_threshold: float | None
    obs_spec: ObsSpec
    registry_spec: gym.envs.registration.EnvSpec | None  # shipped to workers that lack the id


def probe_env(config: EnvConfig, policy: PolicyConfig | None = None) -> Probe:
    """Spaces, observation spec and solved threshold, from one throwaway env; an unsupported
    space fails here, before anything is written."""
    env = make_env(config)
    try:
        layout = policy.image_layout if policy is not None else "auto"
        obs_spec = ObsSpec.from_space(env.observation_space, config.id, layout)
        distribution_for(env.action_space, config.id)
        spec_threshold = env.spec.reward_threshold if env.spec is not None else None
        threshold = config.reward_threshold if config.reward_threshold is not None else spec_threshold
        registry_spec = gym.registry.get(config.id.rpartition(":")[2]) if _entry_point(config.id) is None else None
        return Probe(env.observation_space, env.action_space, threshold, obs_spec, registry_spec)
    finally:
        env.close()
