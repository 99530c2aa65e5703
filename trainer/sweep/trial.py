"""One sweep trial as a Ray Tune Trainable: a training session that Tune steps one iteration at a
time, checkpoints in the trainer's own format, and restores with the trial's config of the moment,
so the hyperparameters a PBT exploit hands it win over the checkpoint's (the learning rate too)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from ray import tune

from trainer.core.config import ConfigError
from trainer.core.errors import UserError
from trainer.runtime.checkpoint import load_checkpoint, save_checkpoint
from trainer.runtime.placement import trial_bundles
from trainer.runtime.session import open_session
from trainer.runtime.training_session import TrainingSession
from trainer.sweep.space import Axis, sampled_config, trial_config
from trainer.sweep.tags import trial_tags

RUN_LOG = "train.log"
BUDGET_DONE = "trained_to_budget"


def trial_resources(base: dict, values: dict) -> tune.PlacementGroupFactory:
    """One placement group per trial, packed onto as few nodes as it fits. Values the config
    refuses get the base config's group: the trial then fails in its first step, naming them,
    where raising here (in the driver) would stop the whole sweep."""
    try:
        config = trial_config(base, values)
    except ConfigError:
        config = trial_config(base, {})
    return tune.PlacementGroupFactory(trial_bundles(config), strategy="PACK")


def trial_run_name(trial_id: str) -> str:
    return f"trial_{trial_id.rsplit('_', 1)[-1]}"


class PPOTrial(tune.Trainable):
    """A trial's run directory is RUNS/trial_NNNNN: config.yaml, events, checkpoints and
    summary.json as `train` writes them, and the session's progress lines in train.log."""

    def setup(self, config: dict, base: dict, axes: list[Axis], space: str, runs_dir: str, metric: str) -> None:
        for name in ("ray.tune", "ray.train"):  # a line per checkpoint saved, in the sweep's output
            logging.getLogger(name).setLevel(logging.WARNING)
        self.values, self.base, self.axes, self.space, self.metric = dict(config), base, axes, space, metric
        self.path = Path(runs_dir) / trial_run_name(self.trial_id)
        self.session: TrainingSession | None = None
        self.checkpoint: dict | None = None  # what the next session starts from (a restore)
        self.last_metric = math.nan
        self.occasional: set[str] = set()  # the tags absent from an iteration where no episode ended
        self.log = None

    def _open(self) -> TrainingSession:
        launched = time.perf_counter()
        # Values the config refuses fail here, in the trial's first step: a failed setup() is Ray's
        # actor creation error, which also prints its traceback on the sweep's console.
        config = sampled_config(self.base, self.values, self.axes, self.space)
        self.occasional = trial_tags(config)[1]
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = self.log or open(self.path / RUN_LOG, "a", buffering=1)  # closed in cleanup
        session = open_session(config, self.checkpoint, self.path, launched=launched, stream=self.log, owns_dir=True)
        session.begin()
        return session

    def step(self) -> dict:
        if self.session is None:
            self.session = self._open()
        report = self.session.step()
        if self.metric in report.scalars:
            self.last_metric = report.scalars[self.metric]
        elif self.metric not in self.occasional and report.iteration == self.session.first_iteration + 1:
            known = ", ".join(sorted(t for t in report.scalars if t.startswith(("charts/", "losses/")))[:6])
            raise UserError(f"--metric {self.metric!r} is not a scalar the run reports; e.g. {known}")
        return {
            **report.scalars,
            self.metric: self.last_metric,  # the newest value: an iteration where no episode ended has none
            "env_steps": report.env_steps,
            "iteration": report.iteration,
            BUDGET_DONE: self.session.done,  # Tune's own `done` is also set on a trial its scheduler stops
            "done": self.session.done,
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        save_checkpoint(Path(checkpoint_dir), self.session.full_state(), keep_last=1, is_best=False)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        path, state = load_checkpoint(checkpoint_dir)
        self.checkpoint = {**state, "path": path}
        if self.session is not None:  # restored while running: the next step starts from the checkpoint
            self._close(request="a restore")

    def cleanup(self) -> None:
        if self.session is not None:
            self._close(request=None if self.session.done else "the sweep's scheduler")
        if self.log is not None:
            self.log.close()

    def _close(self, request: str | None) -> None:
        session, self.session = self.session, None
        session.conclude()
        session.finish_summary(request)
