"""The process group of data-parallel learners (torch.distributed: NCCL on CUDA, gloo on CPU)
and the few collectives a sharded update needs. Every rank calls the same collectives in the
same order: the buffer shards are equal, so every rank takes the same minibatch steps."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist


class LearnerGroup:
    """This process's rank among `world` learners."""

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
        """The sum over ranks (in place, and returned)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather(self, obj) -> list:
        """Every rank's object, in rank order, on every rank."""
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def close(self) -> None:
        """Destroy the process group (this rank's part of it)."""
        if dist.is_initialized():
            dist.destroy_process_group()
