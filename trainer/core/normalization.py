"""Running mean/std of observations (or returns) with an exact parallel merge (Chan et al.).

Rollout workers `update()` a delta that starts empty each iteration; the learner merges the
deltas into the global stats. Stats are float64 and only ever change in place, so they stay
ordinary tensors even though `update()` runs in inference mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MomentStats:
    """(count, mean, M2) of a set of samples: what a worker ships and a checkpoint stores."""

    count: float
    mean: torch.Tensor
    m2: torch.Tensor


class RunningMeanStd:
    """Per-feature running mean and variance over a leading batch dimension."""

    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-8) -> None:
        self.shape = tuple(shape)
        self.eps = eps
        self.count = 0.0
        self.mean = torch.zeros(self.shape, dtype=torch.float64)
        self.m2 = torch.zeros(self.shape, dtype=torch.float64)

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / self.count if self.count > 0 else torch.ones_like(self.m2)

    @torch.inference_mode()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch `[B, *shape]` into the stats, in place."""
        x = x.reshape(-1, *self.shape).to(torch.float64)
        if x.shape[0] == 0:
            return
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        self._combine(float(x.shape[0]), batch_mean, batch_m2)

    @torch.inference_mode()
    def merge(self, other: MomentStats) -> None:
        """Fold another instance's (or a worker delta's) stats in: exact, order-independent."""
        self._combine(other.count, other.mean.to(torch.float64), other.m2.to(torch.float64))

    def _combine(self, count: float, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.m2.add_(m2 + delta**2 * (self.count * count / total))
        self.mean.add_(delta * (count / total))
        self.count = total

    def moments(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        """(mean, std) exactly as normalize() uses them, for callers that normalize many batches
        with frozen stats (rollout workers)."""
        return self.mean.to(device=device, dtype=dtype), torch.sqrt(self.var.to(device=device, dtype=dtype) + self.eps)

    def normalize(self, x: torch.Tensor, clip: float | None = None) -> torch.Tensor:
        """(x - mean) / std, clipped. Not inference mode: on the learner its output feeds autograd."""
        return standardize(x, *self.moments(x.dtype, x.device), clip)

    def scale(self, x: torch.Tensor, clip: float | None = None) -> torch.Tensor:
        """x / std, clipped: reward scaling keeps the sign and zero of rewards."""
        std = torch.sqrt(self.var.to(device=x.device, dtype=x.dtype) + self.eps)
        out = x / std
        return out.clamp(-clip, clip) if clip is not None else out

    def stats(self) -> MomentStats:
        return MomentStats(self.count, self.mean.clone(), self.m2.clone())

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        self.merge(MomentStats(state["count"], state["mean"], state["m2"]))

    @classmethod
    def from_stats(cls, stats: MomentStats, eps: float = 1e-8) -> RunningMeanStd:
        rms = cls(tuple(stats.mean.shape), eps)
        rms.merge(stats)
        return rms

    def reset(self) -> None:
        """Empty the stats in place (a worker's delta after it has been shipped)."""
        self.count = 0.0
        self.mean.zero_()
        self.m2.zero_()


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, clip: float | None) -> torch.Tensor:
    out = (x - mean) / std
    return out.clamp(-clip, clip) if clip is not None else out
