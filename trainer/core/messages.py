"""What crosses between learner and workers: a PolicySnapshot out, a Rollout back.

Both hold only plain CPU tensors and numbers, so they move through Ray's object store (or stay
in-process) unchanged. A rollout's tensors are the fields of its RolloutSpec (spec.py), image
leaves still uint8. Shapes: T rollout steps, E envs of one worker, C = T / K sequence chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainer.core.errors import UserError
from trainer.core.normalization import MomentStats


@dataclass(frozen=True)
class PolicySnapshot:
    """Everything a worker needs to act for one iteration; published once per iteration. The
    weights include the preprocessor's frozen observation stats."""

    version: int
    weights: dict[str, torch.Tensor]
    opponents: dict | None = None  # self-play: the pool's snapshots and how to sample them (opponent_pool.py)


@dataclass
class EpisodeStats:
    """Returns and lengths of the episodes that finished during one rollout: the env's own
    episodes (a whole Atari game, raw score), whatever wrappers end training episodes sooner."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)  # multi-agent: whose episode each one was

    @classmethod
    def concat(cls, parts: list[EpisodeStats]) -> EpisodeStats:
        return cls(
            [r for p in parts for r in p.returns],
            [n for p in parts for n in p.lengths],
            [a for p in parts for a in p.agents],
        )


@dataclass
class Rollout:
    """One worker's T steps over its E envs, collected with policy `version`.

    `tensors` holds, by field name: `obs/<leaf>` [T, E, *leaf] raw observations; `actions`
    [T, E, A]; `logprob`, `value`, `reward` (raw), `bootstrap_value` (V(final obs) where
    truncated) [T, E]; `terminated`, `truncated`, `first` (obs[t] starts an episode) [T, E] bool;
    `last_value` [E]; `hidden` [C, 2, L, E, H], the recurrent state at each chunk start."""

    version: int
    worker_index: int
    tensors: dict[str, torch.Tensor]
    obs_delta: dict[str, MomentStats]  # per vector leaf: the observations this worker saw since the snapshot
    return_delta: MomentStats  # stats of discounted returns, for reward scaling
    episodes: EpisodeStats
    timings: dict[str, float]  # seconds per phase on the worker (perf/env_s, perf/forward_s), env_failures


@dataclass
class AgentRollouts:
    """One multi-agent worker's T steps: a Rollout per policy, whose envs are the policy's agent
    slots (see workers/multi_agent_worker.py). `episodes`: every agent's, with its id."""

    version: int
    worker_index: int
    parts: dict[str, Rollout]
    episodes: EpisodeStats
    timings: dict[str, float]
    outcomes: list[tuple[int, float]] = field(default_factory=list)  # self-play: (snapshot id, +1 won / 0 / -1 lost)


def check_rollout(
    rollout: Rollout, version: int, expected: dict[str, tuple[tuple[int, ...], torch.dtype]], max_lag: int = 0
) -> None:
    """Refuse a rollout from another policy version (beyond `max_lag` older ones, when
    collection overlaps the update), with missing fields, of the wrong shape or dtype, or not finite."""
    where = f"rollout from worker {rollout.worker_index}"
    if not version - max_lag <= rollout.version <= version:
        raise StaleRolloutError(f"{where} was collected with policy version {rollout.version}, learner is at {version}")
    missing = sorted(set(expected) - set(rollout.tensors))
    if missing:
        raise UserError(f"{where}: fields {missing} are missing")
    for name, (shape, dtype) in expected.items():
        tensor = rollout.tensors[name]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise UserError(f"{where}: {name} is {tuple(tensor.shape)} {tensor.dtype}, expected {shape} {dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{where}: {name} holds NaN or inf values")


class StaleRolloutError(UserError):
    """A rollout collected with another policy version than the learner's."""
