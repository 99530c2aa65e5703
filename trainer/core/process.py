"""Process-wide settings, made once where a process starts (an actor's constructor, `train()` for
the in-process runtime), never inside the library's classes: importing or building a Learner or
a RolloutWorker changes nothing about the process that does it."""

from __future__ import annotations

import os
from typing import Literal

import torch

from trainer.core.config import Config

Role = Literal["learner", "rollout worker", "evaluation worker", "inline"]


def set_up_process(config: Config, role: Role) -> None:
    """torch's thread count for the role; rollout and evaluation workers also step back in CPU
    priority (workers.nice), so the learner goes first on shared cores. The in-process runtime
    runs both sides in turn, at the learner's thread count."""
    workers = role in ("rollout worker", "evaluation worker")
    torch.set_num_threads(config.workers.torch_threads if workers else config.learner.torch_threads)
    if workers:
        os.nice(config.workers.nice)
