"""One description of what a step holds, built from the spaces.

`ObsSpec` turns an observation space into a tree of leaves (a Box is one leaf; Dict and Tuple
give a leaf per key; Discrete, MultiDiscrete and MultiBinary are index/bit leaves that the
preprocessor one-hots; an action mask is a bool leaf the network never sees). `RolloutSpec`
gives every rollout field its per-env shape, dtype and env axis. Worker storage, the rollout
check, the buffer, minibatches and export all derive from these two; nothing else lists the
fields. Shapes: T rollout steps, E envs of one worker, C = T / K sequence chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces

from trainer.core.errors import UserError

LeafKind = Literal["vector", "image", "discrete", "multidiscrete", "binary", "mask"]
ROOT = "obs"  # the key of a plain (non-Dict, non-Tuple) observation


class UnsupportedSpaceError(UserError):
    """An observation space the trainer cannot turn into tensors."""


@dataclass(frozen=True)
class ObsLeaf:
    """One numeric part of an observation, stored per env as `shape` / `dtype`."""

    key: str
    kind: LeafKind
    shape: tuple[int, ...]
    dtype: torch.dtype
    channels_first: bool = True  # image leaves: (C, H, W) as stored; else (H, W, C) or (H, W)
    sizes: tuple[int, ...] = ()  # discrete leaves: the number of values of each index
    starts: tuple[int, ...] = ()  # discrete leaves: the smallest value of each index

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of an image leaf, whatever its stored layout."""
        if len(self.shape) == 2:
            return (1, *self.shape)
        c, h, w = self.shape if self.channels_first else (self.shape[2], self.shape[0], self.shape[1])
        return (c, h, w)

    @property
    def feature_size(self) -> int:
        """Width of the flat float features of a non-image leaf."""
        if self.kind in ("discrete", "multidiscrete"):
            return sum(self.sizes)
        return math.prod(self.shape)

    def describe(self) -> dict:
        return {"key": self.key, "kind": self.kind, "shape": list(self.shape), "dtype": str(self.dtype)}


@dataclass(frozen=True)
class ObsSpec:
    """The observation as a tree of leaves, keyed by path ('image', 'direction', '0', 'a/b')."""

    leaves: tuple[ObsLeaf, ...]
    dropped: tuple[str, ...] = ()  # keys of non-numeric parts left out, e.g. MiniGrid's 'mission'
    mask_source: str | None = None  # where the env keeps the action mask leaf's values (action_masks.py)

    @classmethod
    def from_space(
        cls,
        space: spaces.Space,
        env_id: str,
        image_layout: str = "auto",
        mask_key: str | None = None,
        mask_source: str | None = None,
    ) -> ObsSpec:
        """`mask_key`: the key of a Dict observation that holds the action mask, which the env
        keeps in `mask_source` (see action_masks.py): a bool leaf, last, the network never sees."""
        leaves: list[ObsLeaf] = []
        dropped: list[str] = []
        mask = None
        if mask_key is not None:
            mask = ObsLeaf(mask_key, "mask", (int(np.prod(space.spaces[mask_key].shape)),), torch.bool)
            space = spaces.Dict({key: sub for key, sub in space.spaces.items() if key != mask_key})
        _collect(space, "", env_id, image_layout, leaves, dropped)
        if not leaves:
            raise UnsupportedSpaceError(
                f"env {env_id!r}: observation space {space} has no numeric part; add an observation wrapper "
                "to env.wrappers that turns it into a Box"
            )
        if mask is None:
            return cls(tuple(leaves), tuple(dropped))
        return cls((*leaves, mask), tuple(dropped), mask_source)

    @property
    def keys(self) -> list[str]:
        return [leaf.key for leaf in self.leaves]

    @property
    def is_single(self) -> bool:
        """A plain Box observation: one leaf at the root."""
        return len(self.leaves) == 1 and self.leaves[0].key == ROOT

    @property
    def single_vector(self) -> bool:
        """A plain Box of floats: one vector leaf at the root."""
        return self.is_single and self.leaves[0].kind == "vector"

    @property
    def fed_leaves(self) -> list[ObsLeaf]:
        """The leaves the network sees: all but the action mask."""
        return [leaf for leaf in self.leaves if leaf.kind != "mask"]

    @property
    def mask_key(self) -> str | None:
        """The key of the action mask leaf, None for an unmasked policy."""
        return next((leaf.key for leaf in self.leaves if leaf.kind == "mask"), None)

    @property
    def vector_leaves(self) -> list[ObsLeaf]:
        """The leaves with running mean/std normalization."""
        return [leaf for leaf in self.leaves if leaf.kind == "vector"]

    def describe(self) -> list[dict]:
        """Plain data a checkpoint records, to refuse an env whose observations differ (and
        where a masked policy's masks come from)."""
        described = [leaf.describe() for leaf in self.leaves]
        if self.mask_source is not None:
            described[-1]["source"] = self.mask_source
        return described

    def batch(self, obs: Any) -> dict[str, torch.Tensor]:
        """A vector env's batched observation -> one tensor `[E, *shape]` per leaf (no copy where
        the dtype already fits)."""
        return {leaf.key: _as_tensor(pick_leaf(obs, leaf.key), leaf) for leaf in self.leaves}

    def stack(self, observations: Iterable[Any]) -> dict[str, torch.Tensor]:
        """Single-env observations (e.g. the final observations of ended episodes) -> a batch."""
        items = list(observations)
        return {
            leaf.key: _as_tensor(np.stack([np.asarray(pick_leaf(o, leaf.key)) for o in items]), leaf)
            for leaf in self.leaves
        }

    def mismatch(self, obs: Any) -> str | None:
        """Why a single env's observation does not fit the spec, or None when it fits."""
        for leaf in self.leaves:
            try:
                value = np.asarray(pick_leaf(obs, leaf.key))
            except (KeyError, IndexError, TypeError):
                return f"observation has no key {leaf.key!r} any more"
            if value.shape != leaf.shape:
                return f"observation {leaf.key!r} changed shape to {value.shape} (expected {leaf.shape})"
            if leaf.kind == "image" and value.dtype != _NUMPY_DTYPES[leaf.dtype]:
                return f"observation {leaf.key!r} changed dtype to {value.dtype} (expected {_NUMPY_DTYPES[leaf.dtype]})"
        return None


_NUMPY_DTYPES = {torch.uint8: np.dtype(np.uint8), torch.bool: np.dtype(np.bool_)}


def example_observation(leaf: ObsLeaf, batch: tuple[int, ...]) -> torch.Tensor:
    """Valid observations of a leaf, `[*batch, *shape]` (discrete leaves at their smallest values)."""
    if leaf.kind in ("discrete", "multidiscrete"):
        return torch.tensor(leaf.starts, dtype=leaf.dtype).reshape(leaf.shape).expand(*batch, *leaf.shape).clone()
    return torch.zeros(*batch, *leaf.shape, dtype=leaf.dtype)


def module_key(key: str) -> str:
    """A leaf key as a torch module name (which may not hold '.'; a Dict key may)."""
    return key.replace(".", "_")


def pick_leaf(obs: Any, key: str) -> Any:
    """The part of an observation (a Dict's key, a Tuple's index, 'a/b' nested) a leaf holds."""
    if key == ROOT and not isinstance(obs, dict):  # a plain observation (a Dict may have a key 'obs')
        return obs
    for part in key.split("/"):
        obs = obs[int(part)] if isinstance(obs, tuple | list) else obs[part]
    return obs


def _as_tensor(value: Any, leaf: ObsLeaf) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value)).to(leaf.dtype)


def _collect(space: spaces.Space, key: str, env_id: str, layout: str, leaves: list, dropped: list) -> None:
    def child(name: object) -> str:
        return f"{key}/{name}" if key else str(name)

    if isinstance(space, spaces.Dict):
        for name, sub in space.spaces.items():
            _collect(sub, child(name), env_id, layout, leaves, dropped)
        return
    if isinstance(space, spaces.Tuple):
        for index, sub in enumerate(space.spaces):
            _collect(sub, child(index), env_id, layout, leaves, dropped)
        return
    leaf_key = key or ROOT
    if isinstance(space, spaces.Box):
        leaves.append(_box_leaf(space, leaf_key, layout))
    elif isinstance(space, spaces.Discrete):
        leaves.append(ObsLeaf(leaf_key, "discrete", (), torch.long, sizes=(int(space.n),), starts=(int(space.start),)))
    elif isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        sizes, starts = tuple(int(n) for n in space.nvec), tuple(int(s) for s in space.start)
        leaves.append(ObsLeaf(leaf_key, "multidiscrete", (len(sizes),), torch.long, sizes=sizes, starts=starts))
    elif isinstance(space, spaces.MultiBinary):
        leaves.append(ObsLeaf(leaf_key, "binary", tuple(np.atleast_1d(space.n).tolist()), torch.uint8))
    elif isinstance(space, spaces.Graph | spaces.Sequence | spaces.OneOf | spaces.MultiDiscrete):
        raise UnsupportedSpaceError(
            f"env {env_id!r}: observation space {type(space).__name__} ({space}) at {leaf_key!r} is not supported "
            "(Box, Discrete, 1-D MultiDiscrete, MultiBinary, Dict and Tuple are); add an observation wrapper to "
            "env.wrappers that turns it into a Box"
        )
    elif key:  # Text, MissionSpace and other spaces of non-numbers: left out, said once at start
        dropped.append(leaf_key)
    else:
        raise UnsupportedSpaceError(
            f"env {env_id!r}: observation space {space} is not numeric; add an observation wrapper to "
            "env.wrappers that turns it into a Box"
        )


def _box_leaf(space: spaces.Box, key: str, layout: str) -> ObsLeaf:
    shape = tuple(int(n) for n in space.shape)
    is_image = space.dtype in (np.uint8, np.bool_) and len(shape) in (2, 3)
    if not is_image:
        return ObsLeaf(key, "vector", shape, torch.float32)
    dtype = torch.uint8 if space.dtype == np.uint8 else torch.bool
    if len(shape) == 2:
        return ObsLeaf(key, "image", shape, dtype)
    # SB3's rule: channels are the smallest dimension, first or last.
    first = layout == "chw" or (layout == "auto" and int(np.argmin(shape)) == 0)
    return ObsLeaf(key, "image", shape, dtype, channels_first=first)


@dataclass(frozen=True)
class Field:
    """One rollout field: its dims with `None` where the env axis goes, and its dtype."""

    name: str
    dims: tuple[int | None, ...]
    dtype: torch.dtype

    @property
    def env_axis(self) -> int:
        return self.dims.index(None)

    def shape(self, envs: int) -> tuple[int, ...]:
        return state_shape(self.dims, envs)


def state_shape(dims: tuple[int | None, ...], batch: int) -> tuple[int, ...]:
    """Dims with None at the batch axis (a policy's `state_dims`, a rollout field's dims) -> the
    shape for a batch of `batch`: (2, L, None, H) -> (2, L, batch, H)."""
    return tuple(batch if d is None else d for d in dims)


def is_recurrent(state_dims: tuple[int | None, ...]) -> bool:
    """Whether a policy with this state layout has memory: its state holds numbers. The MLP's
    (2, 0, None, 0) and a memoryless core's (None, 0) do not. The one definition of "recurrent";
    `PolicyConfig.recurrent` tells the same from the config where no policy exists yet."""
    return bool(state_dims) and 0 not in state_dims


OBS_PREFIX = "obs/"


@dataclass(frozen=True)
class RolloutSpec:
    """Every tensor field a rollout carries, derived from the obs spec, the action distribution,
    the policy's recurrent state and the rollout sizes: T steps, cut into sequences of K (the
    LSTM's unroll length; T for a memoryless policy)."""

    fields: tuple[Field, ...]
    rollout_steps: int  # T
    sequence_length: int  # K

    @classmethod
    def build(
        cls,
        obs: ObsSpec,
        *,
        action_dim: int,
        action_dtype: torch.dtype,
        state_dims: tuple[int | None, ...],
        rollout_steps: int,
        sequence_length: int,
        valid: bool = False,
    ) -> RolloutSpec:
        """`valid`: a per-step flag of the samples to train on (multi-agent rollouts, where an
        agent slot that acted fewer than T times is padded to T with samples that are not)."""
        T, C = rollout_steps, rollout_steps // sequence_length
        per_step = [Field(OBS_PREFIX + leaf.key, (T, None, *leaf.shape), leaf.dtype) for leaf in obs.leaves]
        per_step.append(Field("actions", (T, None, action_dim), action_dtype))
        per_step += [Field(name, (T, None), torch.float32) for name in ("logprob", "value", "reward")]
        per_step += [Field(name, (T, None), torch.bool) for name in ("terminated", "truncated", "first")]
        per_step.append(Field("bootstrap_value", (T, None), torch.float32))  # V(final obs) where truncated
        if valid:
            per_step.append(Field("valid", (T, None), torch.bool))
        per_step.append(Field("last_value", (None,), torch.float32))  # V(obs after the last step)
        per_step.append(Field("hidden", (C, *state_dims), torch.float32))  # state at each chunk start
        return cls(tuple(per_step), rollout_steps, sequence_length)

    def allocate(self, envs: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return {f.name: torch.zeros(f.shape(envs), dtype=f.dtype, device=device) for f in self.fields}

    def nbytes(self, envs: int) -> int:
        """Bytes of one rollout of `envs` envs, before allocating it."""
        return sum(math.prod(f.shape(envs)) * f.dtype.itemsize for f in self.fields)

    @property
    def has_valid(self) -> bool:
        """Whether some samples may be padding (the `valid` field)."""
        return any(f.name == "valid" for f in self.fields)

    def expected(self, envs: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {f.name: (f.shape(envs), f.dtype) for f in self.fields}


def obs_fields(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The observation leaves among a rollout's (or buffer's) fields, by leaf key."""
    return {name[len(OBS_PREFIX) :]: t for name, t in tensors.items() if name.startswith(OBS_PREFIX)}
