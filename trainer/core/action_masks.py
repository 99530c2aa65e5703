"""Invalid-action masks: where an env keeps them, and the wrapper that puts them in the observation.

Envs keep masks in one of three places: a key of a Dict observation (PettingZoo's classic
games, Sample Factory's convention), `info["action_mask"]` (gymnasium's Taxi and CliffWalking)
or a method `action_masks()` (sb3-contrib's). `find_mask_source` tells which, once, from the
probe's env. `MaskInObservation` then puts the mask in the observation (under the same key) and
checks it at every reset and step, so from the vector env on a mask is one more observation leaf:
batched, stored in rollouts and minibatches like any leaf, never fed to the network, and applied
to the action logits wherever an action is chosen (see `ActorCritic.masked`).
"""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from trainer.core.config import EnvConfig
from trainer.core.errors import UserError

MaskSource = Literal["observation", "info", "method"]
WRAPPED_KEY = "observation"  # where a non-Dict observation goes once the mask sits beside it
MASKED_LOGIT = -1e8  # finite: an illegal action's probability is exactly 0 and the entropy stays finite
SOURCE_TEXT = {
    "observation": "the observation's key {key!r}",
    "info": "info[{key!r}]",
    "method": "the env's action_masks() method",
}
MISSING_TEXT = {
    "observation": "no Dict observation key {key!r}",
    "info": "no {key!r} in the info of a reset",
    "method": "no action_masks() method",
}


class ActionMaskError(UserError):
    """An env's action mask that does not fit its action space, or allows no action."""


def mask_sizes(action_space: spaces.Space) -> list[int] | None:
    """The mask's parts for an action space: one per Discrete or MultiDiscrete component
    (concatenated, as sb3-contrib lays them out); None where actions cannot be masked."""
    if isinstance(action_space, spaces.Discrete):
        return [int(action_space.n)]
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        return [int(n) for n in action_space.nvec]
    return None


def no_legal_action(masks: np.ndarray, sizes: list[int]) -> str | None:
    """Why a batch of masks `[B, sum(sizes)]` leaves some row with nothing to take, or None."""
    for part, allowed in enumerate(np.split(masks, np.cumsum(sizes)[:-1], axis=-1)):
        empty = np.flatnonzero(~allowed.any(-1))
        if empty.size:
            which = f" in part {part} of {len(sizes)}" if len(sizes) > 1 else ""
            row = f" (row {empty[0]} of the batch)" if len(masks) > 1 else ""
            return f"allows no action{which}{row}"
    return None


def describe_source(source: MaskSource, key: str) -> str:
    return SOURCE_TEXT[source].format(key=key)


def find_mask_source(env: gym.Env, config: EnvConfig) -> MaskSource | None:
    """Where `env` keeps its action masks (`env.action_mask`: `auto` looks in the observation,
    then for the method, then in the info of one reset), or None. A mask on actions that cannot
    be masked, or one `env.action_mask` names but the env lacks, is one line."""
    if config.action_mask == "off":
        return None
    key = config.action_mask_key
    auto = config.action_mask == "auto"
    wanted: list[MaskSource] = ["observation", "method", "info"] if auto else [config.action_mask]
    found = next((source for source in wanted if _has_mask(env, source, key)), None)
    if found is None and config.action_mask != "auto":
        raise ActionMaskError(
            f"env.action_mask is {config.action_mask!r} but env {config.id!r} has "
            f"{MISSING_TEXT[config.action_mask].format(key=key)}; set env.action_mask: auto (or off), or "
            "env.action_mask_key to the key it uses"
        )
    if found is not None and mask_sizes(env.action_space) is None:
        raise ActionMaskError(
            f"env {config.id!r} gives action masks ({describe_source(found, key)}) but its action space "
            f"{env.action_space} cannot be masked (Discrete and MultiDiscrete can); set env.action_mask: off"
        )
    return found


def _has_mask(env: gym.Env, source: MaskSource, key: str) -> bool:
    if source == "observation":
        return isinstance(env.observation_space, spaces.Dict) and key in env.observation_space.spaces
    if source == "method":
        try:
            return callable(env.get_wrapper_attr("action_masks"))
        except AttributeError:
            return False
    _, info = env.reset()
    return key in info


class MaskInObservation(gym.Wrapper):
    """The env's mask under `key` of a Dict observation (a non-Dict observation moves to the key
    `observation` beside it), checked at every reset and step: its size against the action
    space, and at least one legal action in each part."""

    def __init__(self, env: gym.Env, source: MaskSource, key: str, env_id: str) -> None:
        super().__init__(env)
        self.source, self.key, self.env_id = source, key, env_id
        self.sizes = mask_sizes(env.action_space)
        self.starts = np.cumsum([0, *self.sizes[:-1]])  # where each part begins
        inner = env.observation_space
        if source == "observation":
            mask_space = inner.spaces[key]
            if int(np.prod(mask_space.shape)) != sum(self.sizes):
                raise self._wrong_size(mask_space.shape)
        else:
            base = dict(inner.spaces) if isinstance(inner, spaces.Dict) else {WRAPPED_KEY: inner}
            self.observation_space = spaces.Dict({**base, key: spaces.MultiBinary(sum(self.sizes))})

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._with_mask(obs, info), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._with_mask(obs, info), reward, terminated, truncated, info

    def _with_mask(self, obs, info: dict):
        if self.source == "observation":
            mask = obs[self.key]
        elif self.source == "info":
            if self.key not in info:
                raise ActionMaskError(f"env {self.env_id!r} gave an info without {self.key!r}")
            mask = info[self.key]
        else:
            mask = self.env.get_wrapper_attr("action_masks")()
        mask = np.asarray(mask).reshape(-1)
        if mask.size != sum(self.sizes):
            raise self._wrong_size(mask.shape)
        legal = mask.astype(bool, copy=False)
        if not np.logical_or.reduceat(legal, self.starts).all():  # one call a step; the words only on failure
            problem = no_legal_action(legal[None], self.sizes)
            raise ActionMaskError(f"env {self.env_id!r} gave an action mask that {problem}")
        if self.source == "observation":
            return obs
        mask = legal.view(np.int8)  # MultiBinary's dtype, no copy
        return {**obs, self.key: mask} if isinstance(obs, dict) else {WRAPPED_KEY: obs, self.key: mask}

    def _wrong_size(self, shape) -> ActionMaskError:
        return ActionMaskError(
            f"env {self.env_id!r}: its action mask ({describe_source(self.source, self.key)}) has shape "
            f"{tuple(shape)}, but action space {self.env.action_space} needs {sum(self.sizes)} entries "
            f"({' + '.join(map(str, self.sizes))}, one per action of each part)"
        )
