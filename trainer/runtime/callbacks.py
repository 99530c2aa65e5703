"""Hooks into a training session: `trainer.train(config, callbacks=[...])`.

A callback sees every iteration's scalars (the TensorBoard tags and values of that iteration,
`eval/*` included when an evaluation finished) and can stop the run: the session then ends as
after its last iteration, with a final checkpoint and summary.json (`interrupted_by` names the
callback). Through its `SessionView` it can write scalars and animations, take the newest policy
weights and keep them as best.pt; its own state rides in every checkpoint. Evaluation during
training is one (trainer/runtime/evaluation.py); so are sweeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray

from trainer.core.config import Config
from trainer.runtime.stats import LearnerState


@dataclass(frozen=True)
class IterationReport:
    iteration: int
    env_steps: int
    scalars: dict[str, float]
    run_dir: Path
    wall_time_s: float


@dataclass(frozen=True)
class PolicyWeights:
    """The policy after one iteration's update, as `SessionView.policy_weights()` hands it out:
    `learner.weights` is what acting needs (a dict in-process, an object-store reference under Ray);
    the rest is what `save_best` needs to write a checkpoint of that moment."""

    iteration: int
    env_steps: int
    learner: LearnerState
    session_state: dict  # the session's checkpoint fields at that iteration


class SessionView:
    """What a callback may use of the session it runs in."""

    def __init__(self, session) -> None:
        self._session = session

    @property
    def config(self) -> Config:
        return self._session.config

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._session.path

    @property
    def iteration(self) -> int:
        return self._session.iteration

    @property
    def env_steps(self) -> int:
        return self._session.env_steps

    def message(self, text: str) -> None:
        """A line on the run's progress stream."""
        self._session.progress.message(text)

    def write_scalars(self, scalars: dict[str, float], env_step: int) -> None:
        self._session.writer.write(scalars, env_step)

    def write_animation(self, tag: str, gif: bytes, frame_shape: tuple[int, ...], env_step: int) -> None:
        self._session.writer.write_animation(tag, gif, frame_shape, env_step)

    def policy_weights(self) -> PolicyWeights:
        """The weights after the newest update (cheap: the optimizer's state is not fetched)."""
        session = self._session
        return PolicyWeights(
            session.iteration, session.env_steps, session.runtime.policy_weights(), session.checkpoint_state()
        )

    def save_best(self, weights: PolicyWeights) -> Path:
        """Write checkpoints/best.pt holding `weights` (and the optimizer's state of that moment):
        `trainer evaluate`, `export` and `--resume` read it like any checkpoint."""
        return self._session.save_best(weights)


class Callback:
    """Subclass and override what you need. A callback that keeps state across a resume returns
    it from `state_dict()` (plain data), and gets it back in `load_state_dict()`; one that sets
    `saves_best` decides best.pt itself (else best.pt follows the training episodes' mean return).
    `summary()` adds fields to summary.json."""

    saves_best = False

    def on_start(self, session: SessionView) -> None:
        """Before the first iteration of this session (a resumed one starts at its checkpoint)."""

    def on_iteration(self, report: IterationReport) -> bool | None:
        """After each iteration, its scalars written; return True to stop the run. Scalars added to
        `report.scalars` are seen by the callbacks after this one (write them with the view)."""
        return None

    def on_end(self, session: SessionView, completed: bool) -> None:
        """Once the loop has ended; `completed`: normally, by the step budget, a stop request or
        a callback (False: an error is on its way out)."""

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        return {}


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


def fetch(part):
    """A LearnerState part as plain data: in-process it is already, under Ray it is fetched."""
    return ray.get(part) if isinstance(part, ray.ObjectRef) else part
