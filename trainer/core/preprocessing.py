"""Stored observation leaves -> float features: the one preprocessing of workers, learner,
evaluation and export.

Vector leaves are standardized with frozen running mean/std and clipped; uint8 image leaves are
divided by 255 (boolean grids taken as 0/1) and put channels first; discrete leaves become
one-hot. The frozen stats are buffers of this module, so they travel inside every snapshot's
weights, every checkpoint and the exported program. It runs under whatever mode its caller is
in: inference mode on a worker, ordinary (gradient-enabled) mode on the learner (invariant 3).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.core.normalization import RunningMeanStd
from trainer.core.spec import ObsLeaf, ObsSpec, module_key


class Standardize(nn.Module):
    """(x - mean) / std, clipped, with frozen stats of one vector leaf."""

    def __init__(self, shape: tuple[int, ...], clip: float) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def freeze(self, rms: RunningMeanStd) -> None:
        mean, std = rms.moments(self.mean.dtype, self.mean.device)
        self.mean.copy_(mean)
        self.std.copy_(std)


class ObsPreprocessor(nn.Module):
    """dict of stored leaves `[..., *shape]` -> dict of float features: `[..., F]` for vector and
    discrete leaves, `[..., C, H, W]` for images."""

    def __init__(self, spec: ObsSpec, normalize: bool, clip: float) -> None:
        super().__init__()
        self.spec = spec
        keys = [leaf.key for leaf in spec.vector_leaves] if normalize else []
        self.standardize = nn.ModuleDict({module_key(k): Standardize(spec_leaf(spec, k).shape, clip) for k in keys})

    def forward(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {leaf.key: self._leaf(leaf, obs[leaf.key]) for leaf in self.spec.fed_leaves}

    def _leaf(self, leaf: ObsLeaf, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(leaf.shape)]
        if leaf.kind == "vector":
            name = module_key(leaf.key)
            x = self.standardize[name](x.float()) if name in self.standardize else x.float()
            return x.reshape(*batch, -1)
        if leaf.kind == "image":
            if len(leaf.shape) == 2:
                x = x.unsqueeze(-3)
            elif not leaf.channels_first:
                x = x.movedim(-1, -3)
            # Channels-last, as the CNN takes them (encoders.py), made while the pixels are still
            # bytes: the layout copy moves a quarter of what it would as floats, and the float
            # conversion and /255 then take one new tensor, not three.
            frames = x.reshape(-1, *x.shape[-3:]).contiguous(memory_format=torch.channels_last)
            frames = frames.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else frames.float()
            return frames.view(x.shape)
        if leaf.kind == "binary":
            return x.float().reshape(*batch, -1)
        index = x if leaf.kind == "multidiscrete" else x.unsqueeze(-1)
        # A comparison, not F.one_hot, which checks the values' range and so does not export.
        hot = [
            (index[..., i, None] - start == torch.arange(n, device=x.device)).float()
            for i, (n, start) in enumerate(zip(leaf.sizes, leaf.starts))
        ]
        return hot[0] if len(hot) == 1 else torch.cat(hot, dim=-1)

    def freeze(self, stats: dict[str, RunningMeanStd]) -> None:
        """Take the learner's current running stats as the frozen ones (no-op when not normalizing)."""
        for key, rms in stats.items():
            name = module_key(key)
            if name in self.standardize:
                self.standardize[name].freeze(rms)


def spec_leaf(spec: ObsSpec, key: str) -> ObsLeaf:
    return next(leaf for leaf in spec.leaves if leaf.key == key)
