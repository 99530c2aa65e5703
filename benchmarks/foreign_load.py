"""CPU used by processes outside this benchmark's process tree, sampled in the background: another
test run on the same machine skews every number here, so each row notes how busy it was."""

from __future__ import annotations

import os
import statistics
import threading
import time

from benchmarks.processes import child_pids


class ForeignLoad:
    """Samples, once a second, the CPU cores used by processes outside this benchmark."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.stamps: list[float] = []  # time.monotonic() at the end of each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ForeignLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _cpu_by_pid(self) -> dict[int, float]:
        import psutil

        ours = {os.getpid(), *child_pids()}
        usage = {}
        for proc in psutil.process_iter(["pid", "cpu_times"]):
            times = proc.info["cpu_times"]
            if proc.info["pid"] not in ours and times is not None:
                usage[proc.info["pid"]] = times.user + times.system
        return usage

    def _run(self) -> None:
        previous, last = self._cpu_by_pid(), time.monotonic()
        while not self._stop.wait(self.interval_s):
            current, now = self._cpu_by_pid(), time.monotonic()
            busy = sum(t - previous.get(pid, t) for pid, t in current.items())
            self.samples.append(max(0.0, busy / (now - last)))
            self.stamps.append(now)
            previous, last = current, now

    def mean_between(self, start: float, end: float) -> float | None:
        """Mean cores used by other processes over [start, end] (monotonic clock)."""
        inside = [x for x, t in zip(self.samples, self.stamps) if start < t <= end + self.interval_s]
        return statistics.fmean(inside) if inside else None

    def wait_idle(self, max_wait_s: float, threshold: float = 0.15) -> float:
        """Wait (at most max_wait_s) until two samples in a row show other processes below
        `threshold` cores; returns the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < max_wait_s:
            recent = [x for x, t in zip(self.samples, self.stamps) if t > began]
            if len(recent) >= 2 and max(recent[-2:]) < threshold:
                break
            time.sleep(self.interval_s / 2)
        return time.monotonic() - began

    def summary(self) -> dict:
        if not self.samples:
            return {"mean_cores": 0.0, "max_cores": 0.0, "seconds_above_0.2_cores": 0}
        return {
            "mean_cores": statistics.fmean(self.samples),
            "max_cores": max(self.samples),
            "seconds_above_0.2_cores": sum(1 for x in self.samples if x > 0.2) * self.interval_s,
        }
