"""The embedded Ray's start-up: its worker processes import the actors' modules (and so torch)
while the driver is still connecting, not when the first actor is created, and run at nice 0."""

from __future__ import annotations

import pytest
import ray

from tests.conftest import make_small_config
from trainer.runtime.ray_connect import ACTOR_MODULES, connect, disconnect

pytestmark = pytest.mark.ray


@ray.remote(num_cpus=1)
def imported_modules() -> list[str]:
    import sys

    return [name for name in ("torch", *ACTOR_MODULES) if name in sys.modules]


@ray.remote(num_cpus=1)
def niceness() -> int:
    import os

    return os.nice(0)


def test_embedded_ray_workers_start_with_actor_modules_imported():
    assert not ray.is_initialized()
    started = connect(make_small_config(execution="ray"), address=None)
    try:
        assert started
        # A task that imports nothing: whatever it finds imported, the worker process preloaded.
        found = ray.get([imported_modules.remote() for _ in range(2)])
        assert found == [["torch", *ACTOR_MODULES]] * 2
        # ...at nice 0 (Ray's default is 15), so the learner keeps the normal priority
        assert ray.get(niceness.remote()) == 0
    finally:
        disconnect()
