"""Both LSTM training unrolls (split at episode starts, and packed) equal a step-by-step loop
that zeroes the state where an episode starts, values and gradients alike."""

from __future__ import annotations

import pytest
import torch

from trainer.config import PolicyConfig
from trainer.distributions import MultiCategorical
from trainer.policy import LSTMActorCritic


def step_loop(policy: LSTMActorCritic, x, h, c, first):
    outputs = []
    for t in range(x.shape[0]):
        keep = (~first[t]).to(x.dtype).unsqueeze(-1)
        out, (h, c) = policy.lstm(x[t : t + 1], (h * keep, c * keep))
        outputs.append(out)
    return torch.cat(outputs), (h, c)


@pytest.mark.parametrize("method", ["_unroll_split", "_unroll_packed"])
@pytest.mark.parametrize("layers", [1, 2])
def test_unroll_equals_step_loop(method, layers):
    torch.manual_seed(layers)
    policy = LSTMActorCritic(
        3, MultiCategorical([2]), PolicyConfig(kind="lstm", hidden_sizes=[8], lstm_hidden_size=6, lstm_layers=layers)
    )
    T, B = 9, 7
    x = torch.randn(T, B, 8, requires_grad=True)
    h0, c0 = torch.randn(layers, B, 6), torch.randn(layers, B, 6)
    first = torch.rand(T, B) < 0.25
    first[:, 0] = False  # a column without starts
    first[0, 1] = True  # a column that starts at t=0
    first[1:, 2] = True  # a column that starts at every step
    keep0 = (~first[0]).float().unsqueeze(-1)
    expected, (eh, ec) = step_loop(policy, x, h0, c0, first)
    got, (gh, gc) = getattr(policy, method)(x, h0 * keep0, c0 * keep0, first)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gh, eh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gc, ec, rtol=1e-5, atol=1e-6)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-5, atol=1e-6)
