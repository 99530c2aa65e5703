"""What a sweep tells its user: one line per trial as it finishes, stops or fails, then
results.csv (every trial, best first) and best_config.yaml (which `train` takes as it is)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ray.tune import Callback

from trainer.core.config import dump_config
from trainer.runtime.run_dir import atomic_write_text
from trainer.sweep.space import trial_config
from trainer.sweep.trial import BUDGET_DONE, trial_run_name

LAST = 5  # a trial's score: the mean of its last LAST reports of the metric (one iteration is noisy)


@dataclass
class TrialRow:
    trial: str
    status: str  # completed, stopped, error, unfinished
    reason: str
    score: float
    run_mean: float  # the metric's mean over all its reports: the tie-break, for the trials that learned sooner
    env_steps: int
    iterations: int
    wall_s: float
    values: dict
    run_dir: str


def describe(values: dict) -> str:
    return " ".join(f"{key}={_short(value)}" for key, value in values.items())


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _error_line(text: str) -> str:
    """The exception's own line from a Tune error file (its traceback's last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "failed"
    kind, sep, message = lines[-1].partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}: {message}" if sep and " " not in kind else lines[-1]


def trial_outcome(trial, scheduler: str) -> tuple[str, str]:
    """(status, reason) of a Tune trial: completed, stopped (by the scheduler), error or unfinished."""
    if trial.status == "ERROR":
        return "error", error_reason(trial)
    if trial.status == "TERMINATED":
        return ended(trial, scheduler)
    return "unfinished", "the sweep stopped before it"


def ended(trial, scheduler: str) -> tuple[str, str]:
    """A trial that ended without an error: at its step budget, or stopped by the scheduler."""
    done = bool((trial.last_result or {}).get(BUDGET_DONE))
    return ("completed", "step budget") if done else ("stopped", f"stopped by {scheduler}")


def error_reason(trial) -> str:
    """A failed trial's one line. Tune writes its error file in the driver's staging folder
    before it tells the callbacks, and copies it to the sweep's storage (trial.path) later."""
    for error_file in (trial.error_file, trial.path and Path(trial.path) / "error.txt"):
        if error_file and Path(error_file).is_file():
            return _error_line(Path(error_file).read_text())
    return "failed"


class TrialLines(Callback):
    """One line per trial that ends: completed, stopped by the scheduler, or failed."""

    def __init__(self, metric: str, scheduler: str) -> None:
        self.metric, self.scheduler = metric, scheduler

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._say(trial, *ended(trial, self.scheduler))  # called while the trial is still RUNNING

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._say(trial, "error", f"failed: {error_reason(trial)}")

    def _say(self, trial, status: str, reason: str) -> None:
        result = trial.last_result or {}
        print(
            f"{trial_run_name(trial.trial_id)} {describe(trial.config)}: {self.metric} "
            f"{_short(float(result.get(self.metric, math.nan)))} at {result.get('env_steps', 0)} steps, {reason}",
            flush=True,
        )


def collect(analysis, metric: str, mode: str, scheduler: str, runs_dir: Path) -> list[TrialRow]:
    """A row per trial of a Tune ExperimentAnalysis, best score first (trials with none last)."""
    rows = []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id)
        reported = frame[metric].dropna() if frame is not None and metric in frame else None
        scores = reported.tail(LAST) if reported is not None else []
        result = trial.last_result or {}
        status, reason = trial_outcome(trial, scheduler)
        rows.append(
            TrialRow(
                trial=trial_run_name(trial.trial_id),
                status=status,
                reason=reason,
                score=float(sum(scores) / len(scores)) if len(scores) else math.nan,
                run_mean=float(reported.mean()) if reported is not None and len(reported) else math.nan,
                env_steps=int(result.get("env_steps", 0)),
                iterations=int(result.get("iteration", 0)),
                wall_s=round(float(result.get("time_total_s", 0.0)), 1),
                values=dict(trial.config),
                run_dir=str(runs_dir / trial_run_name(trial.trial_id)),
            )
        )
    sign = -1.0 if mode == "max" else 1.0

    def rank(row: TrialRow) -> tuple:
        return (math.isnan(row.score), sign * _number(row.score), sign * _number(row.run_mean))

    return sorted(rows, key=rank)


def _number(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def write_results(path: Path, rows: list[TrialRow], keys: list[str], metric: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["trial", *keys, f"{metric} (mean of last {LAST})", f"{metric} (mean of all)", "status", "reason",
             "env_steps", "iterations", "wall_s", "run_dir"]
        )  # fmt: skip
        for row in rows:
            score, run_mean = ("" if math.isnan(v) else f"{v:.6g}" for v in (row.score, row.run_mean))
            writer.writerow(
                [row.trial, *(row.values.get(k) for k in keys), score, run_mean, row.status, row.reason,
                 row.env_steps, row.iterations, row.wall_s, row.run_dir]
            )  # fmt: skip


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    """The best trial that ran its whole budget; else the best of any with a score."""
    scored = [row for row in rows if not math.isnan(row.score)]
    completed = [row for row in scored if row.status == "completed"]
    return (completed or scored or [None])[0]


def write_best_config(path: Path, row: TrialRow, base: dict, metric: str, scheduler: str) -> None:
    note = (
        f"# The best trial of this sweep: {row.trial} ({describe(row.values)}), {metric} {row.score:.6g} "
        f"(mean of its last {LAST} iterations), {row.status}.\n"
    )
    if scheduler == "pbt":
        note += "# PBT changed its hyperparameters as it trained: these are the values it ended with.\n"
    atomic_write_text(path, note + dump_config(trial_config(base, row.values)))
