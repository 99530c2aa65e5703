"""Graceful stop on SIGINT/SIGTERM (Ctrl-C, `ray job stop`): the first signal asks the loop to
finish its iteration and write a final checkpoint, and says so at once; a second one interrupts
at once (the caller then names the newest checkpoint)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType


class GracefulStop:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> None:
        self.requested: str | None = None
        self.training = False  # set once the first iteration starts: before it, there is no iteration to finish
        self.say = say
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        if self.training:
            line = (
                f"{self.requested}: stopping after this iteration with a final checkpoint (again: at once, without one)"
            )
        else:
            line = f"{self.requested}: stopping once start-up ends, before training (again: at once)"
        try:
            self.say(line)
        except RuntimeError:  # the signal came in the middle of a print to the same stream
            os.write(2, (line + "\n").encode())

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
