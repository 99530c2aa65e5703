"""Hooks into a training session: `trainer.train(config, callbacks=[...])`.

A callback sees every iteration's scalars (the TensorBoard tags and values of that iteration,
`eval/*` included when an evaluation finished) and can stop the run: the session then ends as
after its last iteration, with a final checkpoint and summary.json (`interrupted_by` names the
callback). Evaluation during training is one (trainer/runtime/evaluation.py); so are sweeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IterationReport:
    iteration: int
    env_steps: int
    scalars: dict[str, float]
    run_dir: Path
    wall_time_s: float


class Callback:
    """Subclass and override what you need. `session` is the TrainingSession: its `config`,
    `path` (run directory), `iteration`, `env_steps` and `write_scalars(scalars, env_step)`."""

    def on_start(self, session) -> None:
        """Before the first iteration of this session (a resumed one starts at its checkpoint)."""

    def on_iteration(self, report: IterationReport) -> bool | None:
        """After each iteration, its scalars written; return True to stop the run."""
        return None

    def on_end(self, session, completed: bool) -> None:
        """Once the loop has ended; `completed`: normally, by the step budget, a stop request or
        a callback (False: an error is on its way out)."""


class FunctionCallback(Callback):
    """A plain function `f(report) -> bool | None` as a callback."""

    def __init__(self, function: Callable[[IterationReport], bool | None]) -> None:
        self.function = function
        self.name = getattr(function, "__name__", type(function).__name__)

    def on_iteration(self, report: IterationReport) -> bool | None:
        return self.function(report)


def as_callbacks(items) -> list[Callback]:
    return [item if isinstance(item, Callback) else FunctionCallback(item) for item in items]


def callback_name(callback: Callback) -> str:
    return getattr(callback, "name", type(callback).__name__)
