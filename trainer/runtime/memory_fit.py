"""The memory a run's rollouts and buffer will take, estimated before anything is allocated: a
rollout length that cannot fit is refused in one line instead of swapping the machine to a halt."""

from __future__ import annotations

import math
import os

import torch

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.policy import build_policy

GB = 1e9


class OutOfMemoryForRun(UserError):
    """The rollouts and the learner's buffer would not fit in memory."""


def estimate_bytes(config: Config, probe: Probe) -> tuple[int, int]:
    """Peak bytes on one machine of (rollout data, the network and its copies). Rollouts: the
    learner's buffer (plus advantages and returns), the workers' storage, and with Ray the
    object-store copy the learner fetches (and the next collection when it overlaps the update).
    The network: the learner's weights, gradients and two Adam moments, the state it publishes
    (weights and moments again) and the driver's copy of it for a checkpoint, a snapshot, and one
    copy per worker and evaluation actor."""
    with torch.device("meta"):  # shapes only: a network too big to fit is not allocated to find out
        policy = build_policy(probe.obs_spec, probe.action_space, config)
    rollouts = probe.rollout_spec.nbytes(config.workers.envs_per_worker)
    rollouts *= config.workers.num_workers
    buffer = rollouts + 2 * 4 * config.steps_per_iteration
    copies = 1 if config.execution == "inline" else 3 + int(config.workers.overlap)
    weights = sum(p.numel() * p.element_size() for p in policy.parameters())
    network_copies = 4 + 3 + 3 + 1 + config.workers.num_workers + int(config.eval.every > 0)
    return buffer + copies * rollouts + rollouts // config.ppo.num_minibatches, weights * network_copies


def available_bytes() -> int | None:
    """Memory this machine can still give (Linux MemAvailable), None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def ensure_memory_fits(config: Config, probe: Probe) -> None:
    (rollouts, network), available = estimate_bytes(config, probe), available_bytes()
    if available is None or rollouts + network <= available:
        return
    ppo, workers = config.ppo, config.workers
    if network >= rollouts:
        with torch.device("meta"):
            parameters = sum(p.numel() for p in build_policy(probe.obs_spec, probe.action_space, config).parameters())
        numbers = sum(math.prod(leaf.shape) for leaf in probe.obs_spec.leaves)
        raise OutOfMemoryForRun(
            f"the policy for {config.env.id!r} has {parameters / 1e6:,.0f}M parameters (its observations hold "
            f"{numbers:,} numbers): with its copies in the learner (gradients, Adam), the workers and "
            f"the object store it needs about {network / GB:.1f} GB, and rollouts {rollouts / GB:.1f} GB more, where "
            f"this machine has {available / GB:.1f} GB available; make the observations smaller (a wrapper in "
            "env.wrappers, e.g. ResizeObservation) or policy.hidden_sizes narrower"
        )
    raise OutOfMemoryForRun(
        f"ppo.rollout_steps={ppo.rollout_steps} x workers.num_workers={workers.num_workers} x "
        f"workers.envs_per_worker={workers.envs_per_worker} steps of {config.env.id!r} need about "
        f"{rollouts / GB:.1f} GB for rollouts and the learner's buffer (and the network {network / GB:.1f} GB), and "
        f"this machine has {available / GB:.1f} GB available; lower ppo.rollout_steps, workers.envs_per_worker or "
        "workers.num_workers"
    )
