"""Action distributions written as plain tensor math.

`torch.distributions` validates and broadcasts on every call, which costs more than the
policy's forward pass on a small batch; these do only the arithmetic PPO needs. Discrete
actions are stored as long `[..., D]` (D = 1 for Discrete), continuous ones as float `[..., A]`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from trainer.core.errors import UserError


class ActionDistribution(nn.Module):
    num_params: int
    action_dim: int
    action_dtype: torch.dtype

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def mode(self, params: torch.Tensor) -> torch.Tensor: ...
    def log_prob(self, params: torch.Tensor, action: torch.Tensor) -> torch.Tensor: ...
    def entropy(self, params: torch.Tensor) -> torch.Tensor: ...


class MultiCategorical(ActionDistribution):
    """Independent categoricals, one per action dimension (Discrete is the D = 1 case)."""

    action_dtype = torch.long

    def __init__(self, nvec: list[int]) -> None:
        super().__init__()
        self.nvec = list(nvec)
        self.num_params = sum(self.nvec)
        self.action_dim = len(self.nvec)

    def _log_probs(self, params: torch.Tensor) -> list[torch.Tensor]:
        if self.action_dim == 1:  # Discrete: skip the split, the common case on the hot path
            return [F.log_softmax(params, dim=-1)]
        return [F.log_softmax(p, dim=-1) for p in params.split(self.nvec, dim=-1)]

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: argmax(logits + Gumbel noise) is a sample of softmax(logits).
        uniform = torch.rand(params.shape, generator=generator, device=params.device)
        gumbel = uniform.clamp_(1e-20, 1.0).log_().neg_().log_().neg_()
        return self.mode(params + gumbel)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        if self.action_dim == 1:
            return params.argmax(-1, keepdim=True)
        return torch.stack([p.argmax(-1) for p in params.split(self.nvec, dim=-1)], dim=-1)

    def log_prob(self, params: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        log_probs = self._log_probs(params)
        if self.action_dim == 1:
            return log_probs[0].gather(-1, action).squeeze(-1)
        parts = [lp.gather(-1, a.unsqueeze(-1)).squeeze(-1) for lp, a in zip(log_probs, action.unbind(-1))]
        return torch.stack(parts, dim=-1).sum(-1)

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        return sum(-(lp.exp() * lp).sum(-1) for lp in self._log_probs(params))


class DiagGaussian(ActionDistribution):
    """Gaussian with a state-independent learned log std; actions are clipped by the env side."""

    action_dtype = torch.float32

    def __init__(self, action_dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.num_params = action_dim
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(params.shape, generator=generator, device=params.device)
        return params + noise * self.log_std.exp()

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def log_prob(self, params: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        z = (action - params) * torch.exp(-self.log_std)
        return (-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        per_dim = self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))
        return per_dim.sum().expand(params.shape[:-1])


def distribution_for(space: spaces.Space, env_id: str = "") -> ActionDistribution:
    if isinstance(space, spaces.Discrete):
        return MultiCategorical([int(space.n)])
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return MultiCategorical([int(n) for n in space.nvec])
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return DiagGaussian(int(space.shape[0]))
    where = f"env {env_id!r}: " if env_id else ""
    raise UserError(
        f"{where}unsupported action space {space}: supported are Discrete, 1-D MultiDiscrete and 1-D Box; "
        "an action wrapper in env.wrappers can map yours onto one of them"
    )
