"""Making one env: gymnasium ids (plugins registered on the way), `module:EnvId`, or
`package.module:Class` entry points, with the config's time limit and wrappers.

Every process that builds an env (each Ray worker, an async vector env's subprocess, evaluation,
export) goes through `make_env`, so plugin registration and wrappers happen there too, not only
in the driver. Episode statistics are recorded right above the env and its time limit, so
returns are the env's own (whole games, unclipped rewards). This module imports no torch: the
subprocesses of `workers.vector_env: async` load only it, gymnasium and the env.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from trainer.core import wrappers as own_wrappers
from trainer.core.action_masks import MaskInObservation
from trainer.core.config import EnvConfig, WrapperConfig
from trainer.core.entry_points import load_entry_point
from trainer.core.errors import UserError


def _register_ale(ale_py) -> None:
    """Register the ALE ids, and keep the emulator's banner off stderr (where a one-line error goes)."""
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)


@dataclass(frozen=True)
class Plugin:
    """A package whose env ids gymnasium finds only after it has registered them."""

    module: str
    extra: str
    register: Callable[[object], None]


PLUGINS = {
    "ALE/": Plugin("ale_py", "atari", lambda module: _register_ale(module)),
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


OWN_ENVS = {
    "MaskedVelocityCartPole-v1": {
        "entry_point": MaskedVelocityCartPole,
        "max_episode_steps": 500,
        "reward_threshold": 475.0,
    },
}
"""The trainer's own gymnasium ids, registered when a config names one (never at import)."""

_registered: set[str] = set()  # plugin modules that registered their ids in this process


def register_own_env(env_id: str) -> None:
    """Register `env_id` with gymnasium if it is one of OWN_ENVS and not registered yet."""
    if env_id in OWN_ENVS and env_id not in gym.registry:
        gym.register(env_id, **OWN_ENVS[env_id])


def register_plugins(config: EnvConfig) -> None:
    """Import `env.imports` and the plugin package an id's prefix names, and register the trainer's
    own ids, so gymnasium knows the id (once per process: registering twice makes gymnasium warn
    about every id)."""
    register_own_env(config.id)
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
        raise _not_installed(name, exc, what, extra) from None


def _not_installed(name: str, exc: ImportError, what: str, extra: str | None = None) -> EnvBuildError:
    package = PACKAGE_NAMES.get(name.split(".")[0], name)
    remedy = f"pip install 'ray-ppo-trainer[{extra}]'" if extra else f"install {package}"
    return EnvBuildError(f"{what} needs {package}, which is not installed ({exc}): {remedy}")


def ensure_registered(config: EnvConfig, spec: gym.envs.registration.EnvSpec | None) -> None:
    """Make `env.id` known in this process: its plugin registers it, else the registration the
    driver had (e.g. made from a script) is copied in."""
    register_plugins(config)
    if spec is not None and spec.id not in gym.registry:
        gym.registry[spec.id] = spec


def make_registered_env(
    config: EnvConfig, registry_spec: gym.envs.registration.EnvSpec | None, mask_source: str | None = None
) -> gym.Env:
    """`make_env` in a process of its own (an async vector env's subprocess), which knows the
    driver's registration of `env.id` only from `registry_spec`."""
    ensure_registered(config, registry_spec)
    return make_env(config, mask_source=mask_source)


def make_env(config: EnvConfig, render_mode: str | None = None, mask_source: str | None = None) -> gym.Env:
    """One env from a registered id or an entry point, with the config's time limit and wrappers;
    with `mask_source` (where the env keeps its action masks, as the probe found), the mask is
    put in the observation and checked at every step (action_masks.py)."""
    register_plugins(config)
    if render_mode == "rgb_array":  # frames off screen: pygame-drawn envs need no display (and say so)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    kwargs = {**config.kwargs, "render_mode": render_mode} if render_mode else config.kwargs
    factory = entry_point(config.id)
    env = _from_entry_point(config.id, factory, kwargs) if factory else _from_registry(config.id, kwargs)
    if config.max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    for index, wrapper in enumerate(config.wrappers):
        env = _wrap(env, wrapper, f"env.wrappers[{index}] ({wrapper.name})")
    if mask_source is not None:
        env = MaskInObservation(env, mask_source, config.action_mask_key, config.id)
    return env


def entry_point(env_id: str) -> Callable[..., gym.Env] | None:
    """The factory of `package.module:Class`; None for registry ids, also gymnasium's `module:EnvId`."""
    module_name, sep, attr = env_id.partition(":")
    if not sep or "/" in module_name:
        return None
    _, factory = load_entry_point(
        env_id, lambda module, exc: EnvBuildError(f"env.id {env_id!r}: cannot import module {module!r} ({exc})")
    )
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
        module_name = wrapper.name.partition(":")[0]
        module, cls = load_entry_point(wrapper.name, lambda name, exc: _not_installed(name, exc, where))
        known = [f"{module_name}:{name}" for name, value in vars(module).items() if isinstance(value, type)]
    else:
        try:
            cls = getattr(gym.wrappers, wrapper.name, None) or getattr(own_wrappers, wrapper.name, None)
        except ImportError as exc:  # gymnasium's array-conversion wrappers import jax or torch's helpers
            package = getattr(exc, "name", None) or exc
            raise EnvBuildError(f"{where}: needs {package}, which is not installed; install it") from None
        known = [name for name in gym.wrappers.__all__ if name[:1].isupper()] + ["EpisodicLife", "FireReset"]
    if not isinstance(cls, type):
        raise EnvBuildError(
            f"{where}: no such wrapper{_did_you_mean(wrapper.name, known)}; give a class of gymnasium.wrappers "
            "(e.g. AtariPreprocessing), EpisodicLife, FireReset, or an entry point 'package.module:Class'"
        )
    try:
        return cls(env, **wrapper.kwargs)
    except Exception as exc:
        raise EnvBuildError(f"{where}: {type(exc).__name__}: {exc}") from None


def _did_you_mean(name: str, known: list[str]) -> str:
    """` (did you mean X?)` for a near miss among `known` names (case aside), else ''."""
    by_lower = {n.lower(): n for n in known}
    close = difflib.get_close_matches(name.lower(), by_lower, n=3)
    return f" (did you mean {' or '.join(by_lower[n] for n in close)}?)" if close else ""
