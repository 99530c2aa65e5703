"""The learner's arithmetic: fp32, or bf16 autocast over the policy's torso and core, where the
device has bf16 instructions. The weights, the optimizer, the heads, the action distribution and
the loss stay fp32, so log-prob ratios keep their precision.

What bf16 gives depends on the layers, not only the device. On an Intel Xeon with AVX512-BF16
and AMX, one update (4 epochs x 4 minibatches): a Nature CNN's (2 x 8 envs x 128 steps, 2
threads) 3.0 s in fp32 against 1.8 s; a masked-CartPole LSTM's (64 x 128) 166 against 127 ms;
CartPole's 64x64 MLP gains nothing (a minibatch's forward and backward 2.7 vs 3.2 ms). So
`learner.precision: auto` takes bf16 where the device has it and the policy has convolutions or
recurrent layers, decided from those facts alone, so two runs of one config on one machine
always compute alike.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch
from torch import nn

from trainer.core.errors import UserError

BF16_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)  # where bf16 autocast pays


def bf16_supported(device: torch.device) -> bool:
    """Whether the device computes in bf16 natively (a CPU without the instructions emulates it,
    slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def use_bf16(precision: str, device: torch.device, policy: nn.Module) -> bool:
    """`learner.precision` resolved for this device and policy."""
    supported = bf16_supported(device)
    if precision == "bf16" and not supported:
        raise UserError(
            f"learner.precision is 'bf16' but the learner's device ({device}) has no bf16 instructions "
            "(a CPU needs AVX512-BF16 or AMX, a GPU Ampere or newer); use 'auto' or 'fp32'"
        )
    if precision == "auto":
        return supported and any(isinstance(module, BF16_LAYERS) for module in policy.modules())
    return precision == "bf16"


def autocast(bf16: bool, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A fresh context for each forward pass: bf16 autocast on the device, or nothing."""
    return partial(torch.autocast, device.type, dtype=torch.bfloat16) if bf16 else nullcontext
