"""Attaching to a Ray cluster, or starting the embedded local one. Imports no torch, so the CLI
can start Ray while another thread imports the trainer (see trainer/cli.py)."""

from __future__ import annotations

import logging
import os
import sys

import ray

from trainer.core.config import Config
from trainer.runtime.placement import run_demands

# What the learner and worker actors import (the Ray runtime imports the worker actor).
ACTOR_MODULES = ("trainer.runtime.ray_runtime", "workers.ray_worker")
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
_started_here = False  # this process started the running Ray, and so stops it


def connect(config: Config, address: str | None, cpus: float | None = None) -> bool:
    """Attach to a cluster (`address`, or RAY_ADDRESS) or start an embedded local Ray with room
    for `cpus` (default: the run's actors). Returns True when this process started Ray (now or
    in an earlier call) and so must stop it."""
    global _started_here
    if ray.is_initialized():
        return _started_here
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # plain worker-log prefixes in job logs and files
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    needed = cpus if cpus is not None else sum(d.resources.get("CPU", 0.0) for d in run_demands(config))
    # Ray 2.60 turns token authentication on for a new local cluster, and says so in a WARNING at
    # every start; for a cluster that lives and dies with this process that is noise.
    logging.getLogger(TOKEN_SETUP_LOGGER).setLevel(logging.ERROR)
    _started_here = True  # before init: a Ctrl-C during it still shuts down what it started
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)),
        include_dashboard=False,
        logging_level=logging.WARNING,
        # Ray starts its idle worker processes as the driver connects; importing torch and our
        # actors' modules there, before the actors are created, takes ~0.5 s off start-up.
        # Worker processes start at nice 0, not Ray's 15: the learner then runs at the normal
        # priority and the rollout workers at workers.nice below it, so that many workers
        # sharing its cores cannot starve the update (64 workers at 19 weigh less than one
        # process at 0; at 15 against 19 the learner got ~4% of a core).
        _system_config={"preload_python_modules": list(ACTOR_MODULES), "worker_niceness": 0},
    )
    return True


def disconnect() -> None:
    """Stop the Ray this process started (a no-op when there is none)."""
    global _started_here
    if _started_here:
        ray.shutdown()
        _started_here = False
