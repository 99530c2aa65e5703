"""Observation encoders: one per leaf (a CNN for each image leaf, the flat features as they are
for vector and one-hot leaves), concatenated into one feature vector `[..., F]`.

CNNs: the Nature DQN network for Atari-size frames (84x84: 3 convolutions, 512 units), a small
3x3 network for grids such as MiniGrid's 7x7 or MinAtar's 10x10, and the IMPALA residual
network as an option. `policy.cnn: auto` picks Nature when both sides are at least 36 pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.core.spec import ObsLeaf, ObsSpec, module_key

NATURE_MIN_SIDE = 36  # the Nature CNN's 8/4, 4/2, 3/1 convolutions need at least this many pixels


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias: detail 2 of 'The 37 Implementation Details of PPO'."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def nature_cnn(channels: int, height: int, width: int) -> nn.Sequential:
    """Mnih et al. 2015, as in CleanRL's ppo_atari.py."""
    convs = nn.Sequential(
        layer_init(nn.Conv2d(channels, 32, 8, stride=4)),
        nn.ReLU(),
        layer_init(nn.Conv2d(32, 64, 4, stride=2)),
        nn.ReLU(),
        layer_init(nn.Conv2d(64, 64, 3, stride=1)),
        nn.ReLU(),
        nn.Flatten(),
    )
    return nn.Sequential(*convs, layer_init(nn.Linear(_flat_size(convs, height, width), 512)), nn.ReLU())


def small_cnn(channels: int, height: int, width: int) -> nn.Sequential:
    """Two 3x3 same-size convolutions and 256 units: for grids of a few cells a side."""
    convs = nn.Sequential(
        layer_init(nn.Conv2d(channels, 16, 3, padding=1)),
        nn.ReLU(),
        layer_init(nn.Conv2d(16, 32, 3, padding=1)),
        nn.ReLU(),
        nn.Flatten(),
    )
    return nn.Sequential(*convs, layer_init(nn.Linear(_flat_size(convs, height, width), 256)), nn.ReLU())


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = layer_init(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv1 = layer_init(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


def impala_cnn(channels: int, height: int, width: int) -> nn.Sequential:
    """Espeholt et al. 2018: three stages of conv, max-pool and two residual blocks (16, 32, 32)."""
    layers: list[nn.Module] = []
    for depth in (16, 32, 32):
        layers += [
            layer_init(nn.Conv2d(channels, depth, 3, padding=1)),
            nn.MaxPool2d(3, stride=2, padding=1),
            _Residual(depth),
            _Residual(depth),
        ]
        channels = depth
    convs = nn.Sequential(*layers, nn.ReLU(), nn.Flatten())
    return nn.Sequential(*convs, layer_init(nn.Linear(_flat_size(convs, height, width), 256)), nn.ReLU())


CNNS = {"nature": nature_cnn, "small": small_cnn, "impala": impala_cnn}


def _flat_size(convs: nn.Module, height: int, width: int) -> int:
    with torch.no_grad():
        first = next(m for m in convs.modules() if isinstance(m, nn.Conv2d))
        return int(convs(torch.zeros(1, first.in_channels, height, width)).shape[1])


def pick_cnn(leaf: ObsLeaf, choice: str) -> str:
    _, height, width = leaf.image_shape
    if choice != "auto":
        return choice
    return "nature" if min(height, width) >= NATURE_MIN_SIDE else "small"


class ObsEncoder(nn.Module):
    """Preprocessed leaves -> `[..., F]`: each image leaf through its CNN, then every leaf's
    features concatenated in spec order. A single flat leaf passes through untouched."""

    def __init__(self, spec: ObsSpec, cnn: str = "auto") -> None:
        super().__init__()
        self.keys = [leaf.key for leaf in spec.fed_leaves]
        self.cnns = nn.ModuleDict()
        self.output_size = 0
        for leaf in spec.fed_leaves:
            if leaf.kind == "image":
                # Channels-last weights and inputs: oneDNN's CPU convolutions are markedly faster
                # so (measured in benchmarks/atari.py's update times).
                network = CNNS[pick_cnn(leaf, cnn)](*leaf.image_shape).to(memory_format=torch.channels_last)
                self.cnns[module_key(leaf.key)] = network
                self.output_size += network[-2].out_features
            else:
                self.output_size += leaf.feature_size

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for key in self.keys:
            x = features[key]
            network = self.cnns[module_key(key)] if module_key(key) in self.cnns else None
            if network is not None:
                batch = x.shape[:-3]
                frames = x.reshape(-1, *x.shape[-3:]).contiguous(memory_format=torch.channels_last)
                x = network(frames).reshape(*batch, -1)
            parts.append(x)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
