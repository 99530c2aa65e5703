"""What crosses between learner and workers: a PolicySnapshot out, a Rollout back.

Both hold only plain CPU tensors and numbers, so they move through Ray's object store (or stay
in-process) unchanged. Shapes: T rollout steps, E envs of one worker, C = T / K sequence chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainer.core.errors import UserError
from trainer.core.normalization import MomentStats


@dataclass(frozen=True)
class PolicySnapshot:
    """Everything a worker needs to act for one iteration; published once per iteration."""

    version: int
    weights: dict[str, torch.Tensor]
    obs_stats: MomentStats
    normalize_obs: bool
    obs_clip: float


@dataclass
class EpisodeStats:
    """Returns and lengths of the episodes that finished during one rollout (raw rewards)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @classmethod
    def concat(cls, parts: list[EpisodeStats]) -> EpisodeStats:
        return cls([r for p in parts for r in p.returns], [n for p in parts for n in p.lengths])


@dataclass
class Rollout:
    """One worker's T steps over its E envs, collected with policy `version`."""

    version: int
    worker_index: int
    obs: torch.Tensor  # [T, E, D] raw (unnormalized) observations
    actions: torch.Tensor  # [T, E, A]
    logprob: torch.Tensor  # [T, E]
    value: torch.Tensor  # [T, E]
    reward: torch.Tensor  # [T, E] raw rewards
    terminated: torch.Tensor  # [T, E] bool
    truncated: torch.Tensor  # [T, E] bool
    first: torch.Tensor  # [T, E] bool: obs[t] starts an episode
    bootstrap_value: torch.Tensor  # [T, E] V(final obs) where truncated[t], else 0
    last_value: torch.Tensor  # [E] V(obs after the last step)
    hidden: torch.Tensor  # [C, 2, L, E, H] recurrent state at each chunk start (before reset)
    obs_delta: MomentStats  # stats of the observations this worker normalized since the snapshot
    return_delta: MomentStats  # stats of discounted returns, for reward scaling
    episodes: EpisodeStats
    timings: dict[str, float]  # seconds spent per phase on the worker

    @property
    def num_steps(self) -> int:
        return self.reward.numel()


TENSOR_FIELDS = (
    "obs", "actions", "logprob", "value", "reward", "terminated", "truncated",
    "first", "bootstrap_value", "last_value", "hidden",
)  # fmt: skip


def check_rollout(
    rollout: Rollout, version: int, expected: dict[str, tuple[tuple[int, ...], torch.dtype]], max_lag: int = 0
) -> None:
    """Refuse a rollout from another policy version (beyond `max_lag` older ones, when
    collection overlaps the update), of the wrong shape or dtype, or not finite."""
    where = f"rollout from worker {rollout.worker_index}"
    if not version - max_lag <= rollout.version <= version:
        raise StaleRolloutError(f"{where} was collected with policy version {rollout.version}, learner is at {version}")
    for name in TENSOR_FIELDS:
        tensor = getattr(rollout, name)
        shape, dtype = expected[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise UserError(f"{where}: {name} is {tuple(tensor.shape)} {tensor.dtype}, expected {shape} {dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{where}: {name} holds NaN or inf values")


class StaleRolloutError(UserError):
    """A rollout collected with another policy version than the learner's."""
