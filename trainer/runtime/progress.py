"""Console progress: a live bar on a terminal, one plain line every few seconds elsewhere
(a Ray job's log, CI), so logs never hold escape codes."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressReporter:
    def __init__(self, total_steps: int, interval_s: float, stream=None) -> None:
        self.total = total_steps
        self.interval_s = interval_s
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.last_line = self.start
        self.bar: Progress | None = None
        if self.stream.isatty():
            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[sps]:>7.0f} steps/s  return {task.fields[ret]:>7.1f}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task("train", total=total_steps, sps=0.0, ret=float("nan"))
            self.bar.start()

    def update(self, step: int, mean_return: float, sps: float) -> None:
        """`sps`: env steps per second of this session's training time (start-up left out), as
        perf/steps_per_s has it."""
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(self.task, completed=step, sps=sps, ret=mean_return)
        elif now - self.last_line >= self.interval_s or step >= self.total:
            self.last_line = now
            percent = 100 * step / self.total
            line = f"step {step}/{self.total} ({percent:.0f}%)  {sps:.0f} steps/s  return {mean_return:.1f}"
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
