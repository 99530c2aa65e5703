"""Graceful stop on SIGINT/SIGTERM (Ctrl-C, `ray job stop`): the first signal asks the loop to
finish its iteration and write a final checkpoint; a second one interrupts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class GracefulStop:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        self.install()
        return self

    def install(self) -> None:
        """Register the handlers; call again after ray.init(), which replaces the SIGTERM handler with
        one that exits at once (so `ray job stop` would leave no final checkpoint)."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous.setdefault(signum, signal.signal(signum, self._handle))

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
