"""The collectives a learner's update runs: over one learner (`LocalCollective`, the identity) or
over data-parallel ranks (`ProcessGroup`: torch.distributed, NCCL on CUDA, gloo on CPU). The
learner always calls them, so a single-learner run executes the code a multi-learner run depends
on. Every rank calls the same collectives in the same order: the buffer shards are equal, so
every rank takes the same minibatch steps."""

from __future__ import annotations

import datetime
from typing import Protocol

import torch
import torch.distributed as dist


class Collective(Protocol):
    rank: int
    world: int

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place, and returned)."""

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """The maximum over ranks (in place, and returned)."""

    def gather(self, obj) -> list:
        """Every rank's object, in rank order, on every rank."""

    def sum_gradients(self, params: list[torch.Tensor], values: torch.Tensor) -> torch.Tensor:
        """Sum every rank's gradients of `params` (their losses are parts of one mean, so the sum is
        the whole minibatch's gradient) and `values`; the summed values are returned."""

    def close(self) -> None:
        """Leave the group (this rank's part of it)."""


class LocalCollective:
    """One learner: every collective is the identity."""

    rank, world = 0, 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather(self, obj) -> list:
        return [obj]

    def sum_gradients(self, params: list[torch.Tensor], values: torch.Tensor) -> torch.Tensor:
        return values

    def close(self) -> None:
        pass


class ProcessGroup:
    """This process's rank in the torch.distributed group of `world` learners."""

    def __init__(self, rank: int, world: int, address: str, port: int, device: torch.device, timeout_s: float):
        self.rank, self.world, self.device = rank, world, device
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{address}:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather(self, obj) -> list:
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def sum_gradients(self, params: list[torch.Tensor], values: torch.Tensor) -> torch.Tensor:
        """One all-reduce for the gradients and the values together."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = self.sum(torch.cat([p.grad.reshape(-1) for p in params] + [values]))
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        return flat[offset:]

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
