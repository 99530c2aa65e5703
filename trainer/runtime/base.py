"""What the session asks of a runtime, and what a runtime asks of its learner handle. Two
runtimes implement them: in this process (inline.py) and on Ray actors (ray_runtime.py)."""

from __future__ import annotations

from typing import Protocol

from trainer.runtime.stats import IterationStats, LearnerState


class Runtime(Protocol):
    def iterate(self) -> IterationStats:
        """One iteration: collect with the newest policy (or the one before, where the runtime
        collects during updates), then update the learner."""

    def policy_weights(self) -> LearnerState:
        """The learner's state after its newest update: its weights for acting (evaluation), its
        optimizer's state only read for a checkpoint."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps to continue exactly: the learner's state and the RNGs."""

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's `state_dict()` (also with another number of workers)."""

    def close(self) -> None:
        """Stop workers and learner; the runtime is not used again."""


class LearnerHandle(Protocol):
    """The learner as a runtime drives it: one in-process Learner, or a group of Ray ranks."""

    restarts: int  # how often it was rebuilt after dying

    def snapshot(self):
        """The policy to collect with (a PolicySnapshot, or its object-store reference)."""

    def start_update(self, rollouts: list) -> object:
        """Hand this iteration's rollouts (one per worker, slot order) to the update."""

    def finish_update(self, pending: object) -> dict[str, float]:
        """Wait for the update `start_update` began; its scalars by TensorBoard tag."""

    def state(self) -> LearnerState:
        """The state after the newest update."""

    def state_dict(self) -> dict:
        """The whole state, optimizer included, as plain CPU data."""

    def load_state_dict(self, state: dict) -> None: ...

    def close(self) -> None: ...
