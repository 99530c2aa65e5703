"""The LSTM unrolls of sequences with episode starts inside (split at the starts, the pieces packed,
or padded) equal a step-by-step loop that zeroes the state where an episode starts, in values
and gradients; split and packed also in the final state."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

from benchmarks.lstm_unroll import UNROLLS
from tests.conftest import vector_policy
from trainer.core.config import PolicyConfig
from trainer.core.policy import LSTMActorCritic


def step_loop(policy: LSTMActorCritic, x, h, c, first):
    outputs = []
    for t in range(x.shape[0]):
        keep = (~first[t]).to(x.dtype).unsqueeze(-1)
        out, (h, c) = policy.lstm(x[t : t + 1], (h * keep, c * keep))
        outputs.append(out)
    return torch.cat(outputs), (h, c)


@pytest.mark.parametrize("method", ["split", "packed", "padded"])
@pytest.mark.parametrize("layers", [1, 2])
def test_unroll_equals_step_loop(method, layers):
    torch.manual_seed(layers)
    policy = vector_policy(
        3, spaces.Discrete(2), PolicyConfig(kind="lstm", hidden_sizes=[8], lstm_hidden_size=6, lstm_layers=layers)
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
    got, state = UNROLLS[method](policy, x, h0 * keep0, c0 * keep0, first)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if method != "padded":
        torch.testing.assert_close(state[0], eh, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state[1], ec, rtol=1e-5, atol=1e-6)
    else:
        assert state is None
    inputs = [x, *policy.lstm.parameters()]  # padding must add nothing to the weights' gradients either
    grads_expected = torch.autograd.grad(expected.square().sum(), inputs)
    grads_got = torch.autograd.grad(got.square().sum(), inputs)
    for grad_got, grad_expected in zip(grads_got, grads_expected):
        torch.testing.assert_close(grad_got, grad_expected, rtol=1e-5, atol=1e-6)
