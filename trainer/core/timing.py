"""The one phase timer: seconds per phase of an iteration, kept under the TensorBoard tag the
phase is logged with (`perf/<phase>_s`), so a new phase is one `with timer.phase(...)` line and
its scalar (and its share of the iteration) appears with nothing else to change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASE_PREFIX, PHASE_SUFFIX = "perf/", "_s"


def phase_tag(name: str) -> str:
    return f"{PHASE_PREFIX}{name}{PHASE_SUFFIX}"


def is_phase(tag: str) -> bool:
    return tag.startswith(PHASE_PREFIX) and tag.endswith(PHASE_SUFFIX)


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        tag = phase_tag(name)
        self.seconds[tag] = self.seconds.get(tag, 0.0) + seconds

    def take(self) -> dict[str, float]:
        """The phases timed since the last take, by tag; the timer starts again from zero."""
        seconds, self.seconds = self.seconds, {}
        return seconds
