"""Custom networks for the tests, written as docs/networks.md says: a GRU core (a recurrent state
of its own layout), a core without memory, an encoder, and classes that break the interface."""

from __future__ import annotations

import torch
from torch import nn

from trainer.core.config import PolicyConfig


class GRUCore(nn.Module):
    """A GRU over the encoder's features; its state is [1, B, H]."""

    def __init__(self, input_size: int, policy: PolicyConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size, policy.lstm_hidden_size)
        self.output_size = policy.lstm_hidden_size
        self.state_dims = (1, None, policy.lstm_hidden_size)

    def forward(self, x: torch.Tensor, state: torch.Tensor, first: torch.Tensor):
        outputs = []
        for t in range(x.shape[0]):
            state = state * (~first[t]).to(x.dtype).unsqueeze(-1)  # zeroed where an episode starts
            out, state = self.gru(x[t : t + 1], state)
            outputs.append(out)
        return torch.cat(outputs), state


class ResidualMLPCore(nn.Module):
    """No memory: state_dims is (), and the empty state goes back as it came."""

    state_dims = ()

    def __init__(self, input_size: int, policy: PolicyConfig) -> None:
        super().__init__()
        width = policy.hidden_sizes[0]
        self.inp = nn.Linear(input_size, width)
        self.block = nn.Sequential(nn.ReLU(), nn.Linear(width, width))
        self.output_size = width

    def forward(self, x, state, first):
        h = self.inp(x)
        return h + self.block(h), state


class SumEncoder(nn.Module):
    """Each leaf's features summed to one number and projected: the smallest encoder that sees
    every leaf (images arrive as [..., C, H, W] floats, vectors and one-hots as [..., F])."""

    def __init__(self, obs_spec, policy: PolicyConfig) -> None:
        super().__init__()
        self.keys = obs_spec.keys
        self.output_size = 8
        self.project = nn.Linear(len(self.keys), self.output_size)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        leaves = [features[k].flatten(-3) if features[k].dim() >= 5 else features[k] for k in self.keys]
        return torch.tanh(self.project(torch.stack([x.sum(-1) for x in leaves], dim=-1)))


class NoStateDims(GRUCore):
    def __init__(self, input_size: int, policy: PolicyConfig) -> None:
        super().__init__(input_size, policy)
        del self.state_dims


class WrongFeatureWidth(GRUCore):
    def forward(self, x, state, first):
        out, state = super().forward(x, state, first)
        return out[..., :-1], state


class ForgetsItsState(GRUCore):
    def forward(self, x, state, first):
        out, _ = super().forward(x, state, first)
        return out, state[:, :1]
