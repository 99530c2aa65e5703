"""Helpers of the tests that break a real local Ray (tests/test_faults.py,
tests/test_learner_group.py): a slow env, the learner's processes, killing them at a chosen
moment, and the env steps TensorBoard recorded."""

from __future__ import annotations

import re
import signal
import threading
import time

import psutil
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SLOW_ENV = {"id": "tests.envs.faults:SlowCartPole", "kwargs": {"step_sleep_s": 0.004}}


def tensorboard_steps(run_dir) -> list[int]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.step for event in events.Scalars("perf/steps_per_s")]


def learner_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if re.search(r"ray::(Multi)?LearnerActor", " ".join(proc.info["cmdline"] or [])):
            found.append(proc)
    return found


def kill_learner_when(
    ready, delay_s: float = 0.0, one: bool = False, sig: signal.Signals = signal.SIGKILL
) -> threading.Thread:
    """Send `sig` (SIGKILL) to the learner's process once, `delay_s` after `ready()` first holds
    (`one`: only one of several learner ranks)."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay_s)
        procs = []
        while not procs and time.monotonic() < deadline:
            procs = learner_processes()
            time.sleep(0.05)
        for proc in procs[-1:] if one else procs:
            proc.send_signal(sig)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
