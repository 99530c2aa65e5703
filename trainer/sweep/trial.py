"""One sweep trial as a Ray Tune Trainable: a training session that Tune steps one iteration at a
time, checkpoints in the trainer's own format, and restores with the trial's config of the moment,
so the hyperparameters a PBT exploit hands it win over the checkpoint's (the learning rate too)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from ray import tune

from trainer.core.errors import UserError
from trainer.runtime.checkpoint import load_checkpoint, save_checkpoint
from trainer.runtime.placement import trial_bundles
from trainer.runtime.session import TrainingSession, prepare_run, start_session
from trainer.sweep.space import trial_config

RUN_LOG = "train.log"
BUDGET_DONE = "trained_to_budget"
EPISODE_TAGS = ("charts/episodic_", "charts/mean_return_last20", "eval/")  # absent until episodes end


def trial_resources(base: dict, values: dict) -> tune.PlacementGroupFactory:
    """One placement group per trial, packed onto as few nodes as it fits."""
    return tune.PlacementGroupFactory(trial_bundles(trial_config(base, values)), strategy="PACK")


def trial_run_name(trial_id: str) -> str:
    return f"trial_{trial_id.rsplit('_', 1)[-1]}"


class PPOTrial(tune.Trainable):
    """A trial's run directory is RUNS/trial_NNNNN: config.yaml, events, checkpoints and
    summary.json as `train` writes them, and the session's progress lines in train.log."""

    def setup(self, config: dict, base: dict, runs_dir: str, metric: str) -> None:
        for name in ("ray.tune", "ray.train"):  # a line per checkpoint saved, in the sweep's output
            logging.getLogger(name).setLevel(logging.WARNING)
        self.values, self.base, self.metric = dict(config), base, metric
        self.path = Path(runs_dir) / trial_run_name(self.trial_id)
        self.session: TrainingSession | None = None
        self.checkpoint: dict | None = None  # what the next session starts from (a restore)
        self.last_metric = math.nan
        self.log = None

    def _open(self) -> TrainingSession:
        launched = time.perf_counter()
        config = trial_config(self.base, self.values)
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = self.log or open(self.path / RUN_LOG, "a", buffering=1)  # closed in cleanup
        probe, path, progress = prepare_run(config, self.checkpoint, self.path, stream=self.log, owns_dir=True)
        session = start_session(config, path, probe, None, progress, self.checkpoint, (), launched)
        session.begin()
        return session

    def step(self) -> dict:
        if self.session is None:
            self.session = self._open()
        report = self.session.step()
        if self.metric in report.scalars:
            self.last_metric = report.scalars[self.metric]
        elif not self.metric.startswith(EPISODE_TAGS) and report.iteration == self.session.first_iteration + 1:
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
