"""The memory a run's rollouts and buffer will take, estimated before anything is allocated: a
rollout length that cannot fit is refused in one line instead of swapping the machine to a halt."""

from __future__ import annotations

import os

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.policy import build_policy, rollout_spec

GB = 1e9


class OutOfMemoryForRun(UserError):
    """The rollouts and the learner's buffer would not fit in memory."""


def estimate_bytes(config: Config, probe: Probe) -> int:
    """Peak bytes of rollout data on one machine: the learner's buffer (plus advantages and
    returns), the workers' storage, and with Ray the object-store copy the learner fetches (and
    the next collection when it overlaps the update)."""
    policy = build_policy(probe.obs_spec, probe.action_space, config)
    rollouts = rollout_spec(probe.obs_spec, policy, config).nbytes(config.workers.envs_per_worker)
    rollouts *= config.workers.num_workers
    buffer = rollouts + 2 * 4 * config.steps_per_iteration
    copies = 1 if config.execution == "inline" else 3 + int(config.workers.overlap)
    return buffer + copies * rollouts + rollouts // config.ppo.num_minibatches


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
    needed, available = estimate_bytes(config, probe), available_bytes()
    if available is None or needed <= available:
        return
    ppo, workers = config.ppo, config.workers
    raise OutOfMemoryForRun(
        f"ppo.rollout_steps={ppo.rollout_steps} x workers.num_workers={workers.num_workers} x "
        f"workers.envs_per_worker={workers.envs_per_worker} steps of {config.env.id!r} need about "
        f"{needed / GB:.1f} GB for rollouts and the learner's buffer, and this machine has "
        f"{available / GB:.1f} GB available; lower ppo.rollout_steps, workers.envs_per_worker or workers.num_workers"
    )
