"""Attaching to a Ray cluster (checked first: a wrong address or a missing auth token fails in
seconds, in one line), or starting the embedded local one and watching it for the run."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import psutil
import ray
from ray import exceptions as ray_errors
from ray._raylet import InnerGcsClient

from trainer.core.config import Config
from trainer.core.errors import UserError
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
        check_cluster(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ray_errors.RayError) as exc:
            raise ClusterUnreachable(f"could not attach to the Ray cluster at {address}: {_cause(exc)}") from None
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


class ClusterUnreachable(UserError):
    """--address (or RAY_ADDRESS) names no Ray cluster this process can attach to."""


CONNECT_TIMEOUT_S = 5.0
TOKEN_HINT = (
    "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file (or RAY_AUTH_TOKEN to the token; "
    "`ray get-auth-token` on the head prints it)"
)


def check_cluster(address: str) -> None:
    """Fail in seconds, in one line, where ray.init would wait: nothing listening at a GCS
    `host:port` (ray.init retries for minutes, deaf to Ctrl-C), or a cluster that wants an
    auth token this process lacks (ray.init retries ~20 s, then dumps a traceback)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # `auto`, `ray://` (Ray Client) and others: ray.init resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__.replace("Error", "").lower() or "no answer"
        raise ClusterUnreachable(
            f"no Ray cluster answers at {address} ({reason}); start one there with `ray start --head "
            f"--port={port}`, or fix --address / RAY_ADDRESS"
        ) from None
    with _quiet_stderr():  # Ray's C++ client logs each refused try on its own
        try:
            InnerGcsClient.standalone(address, None, int(CONNECT_TIMEOUT_S * 1000))
        except ray_errors.AuthenticationError:
            mode = os.environ.get("RAY_AUTH_MODE", "disabled")
            problem = "wants an auth token" if mode != "token" else "refused this process's auth token"
            raise ClusterUnreachable(f"the Ray cluster at {address} {problem}: {TOKEN_HINT}") from None
        except Exception:  # anything else is for ray.init to report, in its own words
            pass


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cause(exc: BaseException) -> str:
    """The innermost cause's first line: Ray wraps an auth failure in two other errors."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ray_errors.AuthenticationError):
        return f"it wants an auth token this process lacks; {TOKEN_HINT}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def watch_embedded_ray(on_lost: Callable[[str], None]) -> None:
    """Watch the embedded Ray's raylet and GCS from a thread. When one dies, Ray's client ends
    this process from C++ at its next call (exit 1, no Python cleanup); so the watcher calls
    `on_lost(reason)` first (the run records its summary and says how to resume), ends the Ray
    processes left behind (agents and actors outlive a raylet by minutes) and exits with status 2."""
    node = ray._private.worker._global_node
    watched = {name: node.all_processes[name][0].process for name in ("raylet", "gcs_server")}
    _stop_watching.clear()

    def watch() -> None:
        ray_side: list[psutil.Process] = []
        for tick in itertools.count():
            if _stop_watching.wait(0.05):
                return
            if tick % 20 == 0:  # the processes to end, noted while they are still this one's descendants
                ray_side = psutil.Process().children(recursive=True)
            for name, process in watched.items():
                code = process.poll()
                if code is not None and not _stop_watching.is_set():
                    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                    try:
                        on_lost(f"the embedded Ray's {name} died ({how})")
                    finally:
                        _end(ray_side + psutil.Process().children(recursive=True))
                        os._exit(2)

    threading.Thread(target=watch, name="embedded-ray-watch", daemon=True).start()


_stop_watching = threading.Event()


def _end(processes: list[psutil.Process]) -> None:
    for process in processes:
        with suppress(psutil.Error):
            process.kill()  # psutil checks it is the same process, not a new one with its pid


def disconnect() -> None:
    """Stop the Ray this process started (a no-op when there is none)."""
    global _started_here
    _stop_watching.set()  # its processes end now, as they should
    if _started_here:
        ray.shutdown()
        _started_here = False
