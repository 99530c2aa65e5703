"""`workers.vector_env: envpool`: EnvPool's C++ envs behind gymnasium's vector API.

EnvPool does in C++ what the config's gymnasium wrappers do in Python (an Atari step is ~20%
cheaper on one thread, its frames preprocessed in the pool), so the config's wrappers are
mapped onto EnvPool's own options, and a wrapper it has no option for is refused in one line.
The vector env keeps the contract of envs.py: finished envs reset in the same step (EnvPool
resets them on their next step, so the adapter takes that step at once), the final observation
in `info["final_obs"]`, and whole-game episode returns in raw score, as RecordEpisodeStatistics
counts them below the wrappers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from trainer.core.config import EnvConfig
from trainer.core.errors import UserError

ATARI_PREFIX = "ALE/"
ALE_DEFAULTS = {"frameskip": 4, "repeat_action_probability": 0.25, "full_action_space": False}
"""What gymnasium's ALE/...-v5 ids default to, where EnvPool's options default otherwise."""


class EnvPoolConfigError(UserError):
    """A config EnvPool cannot run as written."""


@dataclass(frozen=True)
class EnvPoolTask:
    """EnvPool's id and options for a config, how many of the gymnasium path's episode-length
    units (its base env's steps) one EnvPool step is, and whether its frames lose EnvPool's stack
    axis (a config without FrameStackObservation has 84x84 frames, not 1x84x84)."""

    task_id: str
    options: dict = field(default_factory=dict)
    frames_per_step: int = 1
    unstacked: bool = False


def import_envpool():
    try:
        return importlib.import_module("envpool")
    except ImportError as exc:
        raise EnvPoolConfigError(
            f"workers.vector_env: envpool needs envpool, which is not installed ({exc}): "
            "pip install 'ray-ppo-trainer[atari]', or set workers.vector_env: sync"
        ) from None


def envpool_task(config: EnvConfig) -> EnvPoolTask:
    """The config's env as EnvPool options; one line naming the key when it cannot be."""
    envpool = import_envpool()
    task_id = config.id.removeprefix(ATARI_PREFIX)
    if task_id not in envpool.list_all_envs():
        raise EnvPoolConfigError(
            f"env.id {config.id!r}: EnvPool has no such env (it has Atari, MuJoCo and classic control ids such as "
            "ALE/Breakout-v5, HalfCheetah-v5, CartPole-v1); set workers.vector_env: sync"
        )
    if config.id.startswith(ATARI_PREFIX):
        return _atari_task(config, task_id)
    known = set(envpool.make_spec(task_id).config._fields)  # the options this id takes
    unknown = sorted(set(config.kwargs) - known)
    if unknown:
        raise EnvPoolConfigError(
            f"env.kwargs {unknown} of {config.id!r} are not EnvPool options (it takes {sorted(known)}); "
            "remove them or set workers.vector_env: sync"
        )
    if config.wrappers:
        raise _no_equivalent(0, config.wrappers[0].name)
    options = dict(config.kwargs)
    if config.max_episode_steps is not None:
        options["max_episode_steps"] = config.max_episode_steps
    return EnvPoolTask(task_id, options)


def _atari_task(config: EnvConfig, task_id: str) -> EnvPoolTask:
    """gymnasium's ALE kwargs and Atari wrappers -> EnvPool's options (its defaults, noop starts
    and fire reset included, overridden so that only what the config asks for happens)."""
    kwargs = {**ALE_DEFAULTS, **config.kwargs}
    unknown = sorted(set(kwargs) - {*ALE_DEFAULTS, "max_num_frames_per_episode"})
    if unknown:
        raise EnvPoolConfigError(
            f"env.kwargs {unknown} of {config.id!r} have no EnvPool option (it maps frameskip, "
            "repeat_action_probability, full_action_space, max_num_frames_per_episode); set workers.vector_env: sync"
        )
    options = {
        "repeat_action_probability": float(kwargs["repeat_action_probability"]),
        "full_action_space": bool(kwargs["full_action_space"]),
        "noop_max": 0,
        "use_fire_reset": False,
        "episodic_life": False,
        "reward_clip": False,
        "stack_num": 1,
    }
    base_skip, skip, preprocessed, stacked = int(kwargs["frameskip"]), 1, False, False
    for index, wrapper in enumerate(config.wrappers):
        where, kw = f"env.wrappers[{index}] ({wrapper.name})", wrapper.kwargs
        if wrapper.name == "AtariPreprocessing":
            preprocessed, skip = True, int(kw.get("frame_skip", 4))
            size = kw.get("screen_size", 84)
            height, width = (size, size) if isinstance(size, int) else (size[1], size[0])
            # EnvPool takes 1 to noop_max no-op frames (none before a fire reset): noop_max 0 becomes 1
            options.update(noop_max=max(1, int(kw.get("noop_max", 30))), img_height=height, img_width=width)
            options["episodic_life"] |= bool(kw.get("terminal_on_life_loss", False))
            for name, wanted in (("grayscale_obs", True), ("grayscale_newaxis", False), ("scale_obs", False)):
                if kw.get(name, wanted) != wanted:
                    raise EnvPoolConfigError(f"{where}: {name}={kw[name]} has no EnvPool option; remove it or set "
                                             "workers.vector_env: sync")  # fmt: skip
        elif wrapper.name == "EpisodicLife":
            options["episodic_life"] = True
        elif wrapper.name == "FireReset":
            options["use_fire_reset"] = True
        elif wrapper.name == "ClipReward" and (kw.get("min_reward"), kw.get("max_reward")) == (-1, 1):
            options["reward_clip"] = True  # Atari rewards are integers: their sign, as EnvPool clips
        elif wrapper.name == "FrameStackObservation" and set(kw) <= {"stack_size"}:
            options["stack_num"], stacked = int(kw["stack_size"]), True
        else:
            raise _no_equivalent(index, wrapper.name)
    if not preprocessed:
        raise EnvPoolConfigError(
            f"env.id {config.id!r} with workers.vector_env: envpool needs AtariPreprocessing in env.wrappers "
            "(EnvPool gives preprocessed frames only); add it or set workers.vector_env: sync"
        )
    options["frame_skip"] = base_skip * skip
    frames = kwargs.get("max_num_frames_per_episode", 108_000)
    if config.max_episode_steps is not None:  # gymnasium's time limit counts the base env's steps
        frames = min(frames, config.max_episode_steps * base_skip)
    options["max_episode_steps"] = max(1, frames // options["frame_skip"])
    return EnvPoolTask(task_id, options, frames_per_step=skip, unstacked=not stacked)


def _no_equivalent(index: int, name: str) -> EnvPoolConfigError:
    return EnvPoolConfigError(
        f"env.wrappers[{index}] ({name}) has no EnvPool equivalent (it maps AtariPreprocessing, EpisodicLife, "
        "FireReset, ClipReward to [-1, 1] and FrameStackObservation for Atari ids, none for others); remove it "
        "or set workers.vector_env: sync"
    )


class EnvPoolVectorEnv(VectorEnv):
    """E envs of one synchronous EnvPool pool, stepped together and reset in the same step: the
    envs whose episode ended take their reset step right after, on their own."""

    metadata: ClassVar[dict] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, config: EnvConfig, num_envs: int) -> None:
        self.task, self.num_envs = envpool_task(config), num_envs
        self.pool = None
        spec = import_envpool().make_spec(self.task.task_id, **self.task.options)
        space = spec.observation_space
        if self.task.unstacked:
            space = gym.spaces.Box(space.low[0], space.high[0], space.shape[1:], space.dtype)
        self.single_observation_space = space
        self.single_action_space = spec.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.ids = np.arange(num_envs, dtype=np.int32)
        self.returns, self.lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)

    def _open(self, seed: int | None) -> None:
        """A pool whose env i is seeded with `seed + i` (EnvPool seeds only when it makes its envs)."""
        if self.pool is not None and seed is None:
            return
        if self.pool is not None:
            self.pool.close()
        seed = seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        seeds = [seed + i for i in range(self.num_envs)]
        self.pool = import_envpool().make_gymnasium(
            self.task.task_id, num_envs=self.num_envs, num_threads=1, env_seed=seeds, **self.task.options
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._open(seed)
        obs, info = self.pool.reset()
        self.returns[:], self.lengths[:] = 0.0, 0
        return self._in_env_order(obs, info["env_id"]), {}

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.pool.step(np.asarray(actions), self.ids)
        order, raw_reward = info["env_id"], info.get("reward", reward)  # Atari's unclipped points
        obs, reward, terminated, truncated, raw_reward = (
            self._in_env_order(x, order) for x in (obs, reward, terminated, truncated, raw_reward)
        )
        self.returns += raw_reward
        self.lengths += self.task.frames_per_step
        done = terminated | truncated
        if not done.any():
            return obs, reward, terminated, truncated, {}
        game_over = (
            self._in_env_order(info["terminated"], order) > 0 if "terminated" in info else terminated
        ) | truncated
        index = np.flatnonzero(done)
        final_obs = np.full(self.num_envs, None, dtype=object)
        for i in index:
            final_obs[i] = obs[i].copy()
        idle = np.zeros((len(index), *self.single_action_space.shape), self.single_action_space.dtype)
        restart, *_, restart_info = self.pool.step(idle, self.ids[index])  # EnvPool ignores the action: a reset
        obs[restart_info["env_id"]] = restart.reshape(len(index), *self.single_observation_space.shape)
        info = {"final_obs": final_obs, "_final_obs": done}
        ended = game_over & done
        if ended.any():
            episode = {"r": np.where(ended, self.returns, 0.0), "l": np.where(ended, self.lengths, 0)}
            info["final_info"] = {"episode": episode, "_episode": ended}
            self.returns[ended], self.lengths[ended] = 0.0, 0
        return obs, reward, terminated, truncated, info

    def _in_env_order(self, values: np.ndarray, env_id: np.ndarray) -> np.ndarray:
        """A batch of E results in env order, frames without the stack axis where it was dropped."""
        ordered = np.empty((self.num_envs, *values.shape[1:]), values.dtype)
        ordered[env_id] = values
        if values.ndim > 1 and self.task.unstacked:
            return ordered.reshape(self.num_envs, *self.single_observation_space.shape)
        return ordered

    def close_extras(self, **kwargs) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
