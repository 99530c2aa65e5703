"""One process's part of a run: iterate the runtime, log, checkpoint, call the callbacks, until
the step budget or a stop request; then the final checkpoint and summary.json. `session.py`
opens it (pre-flight, run directory, runtime); sweep trials drive the same class."""

from __future__ import annotations

import math
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import numpy as np

from trainer.core.agents import AgentsProbe
from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.runtime.callbacks import IterationReport, PolicyWeights, SessionView, callback_name, fetch
from trainer.runtime.checkpoint import (
    CHECKPOINT_DIR,
    capture_rng,
    describe_spaces,
    periodic_checkpoints,
    save_best_checkpoint,
    save_checkpoint,
)
from trainer.runtime.metrics import MetricsWriter, iteration_scalars
from trainer.runtime.run_dir import release_run_dir, write_json
from trainer.runtime.stats import IterationStats
from trainer.runtime.stopping import GracefulStop
from trainer.runtime.tracking import WINDOW, EpisodeTracker

RATIO_TOLERANCE = 1e-4  # on-policy, the first minibatch's |ratio - 1| is float noise (~1e-7)
BF16_RATIO_TOLERANCE = 5e-2  # a bf16 learner's features carry ~3 significant digits


def planned_steps(config: Config, first_step: int = 0) -> int:
    """Env steps the run ends at: ppo.total_steps, rounded up to whole iterations from where
    this session starts."""
    remaining = max(0, config.ppo.total_steps - first_step)
    return first_step + -(-remaining // config.steps_per_iteration) * config.steps_per_iteration


def resume_hint(path: Path) -> str:
    """Which checkpoint is newest and how to continue from it, for a run that stopped early."""
    found = periodic_checkpoints(path / CHECKPOINT_DIR)
    if not found:
        return f"no checkpoint was written yet; start again with --run-dir {path} --resume auto"
    return f"newest checkpoint {found[-1]}; continue with: python -m trainer train --resume {path}"


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


class TrainingSession:
    """One process's part of a run: iterate, log, checkpoint, until the step budget or a stop
    request. A resumed session starts from the checkpoint's counters and state."""

    def __init__(
        self, config: Config, path: Path, probe: Probe, runtime, progress, checkpoint=None, callbacks=(), launched=None
    ):
        """`launched`: when train() was called, for the start-up time (to the first iteration)."""
        self.config, self.path, self.spaces = config, path, describe_spaces(probe)
        self.runtime, self.progress = runtime, progress
        self.callbacks = list(callbacks)
        self.view = SessionView(self)
        self.best_by_callback = any(callback.saves_best for callback in self.callbacks)
        self.stopped_by: str | None = None  # the callback that stopped the run
        self.tracker = EpisodeTracker(probe.reward_threshold)
        # A multi-agent run's: each agent's episodes, and each policy's agents (for the summary).
        self.groups = {name: g.agents for name, g in probe.groups.items()} if isinstance(probe, AgentsProbe) else {}
        self.agent_trackers = {agent: EpisodeTracker(None) for agents in self.groups.values() for agent in agents}
        self.iteration, self.env_steps, self.wall_before = 0, 0, 0.0
        # Restarts over the run: the earlier sessions' (from the checkpoint) plus this runtime's.
        self.worker_restarts, self.learner_restarts = [0] * config.workers.num_workers, 0
        if checkpoint is not None:
            runtime.load_state_dict(checkpoint["runtime"])
            saved = checkpoint["restarts"][: config.workers.num_workers]  # a resume onto more or fewer workers
            self.worker_restarts[: len(saved)] = saved  # keeps what it can
            self.learner_restarts = checkpoint["learner_restarts"]
            self.tracker.load_state_dict(checkpoint["tracker"])
            for agent, state in checkpoint.get("agent_trackers", {}).items():
                if agent in self.agent_trackers:
                    self.agent_trackers[agent].load_state_dict(state)
            self.iteration, self.env_steps = checkpoint["iteration"], checkpoint["env_steps"]
            self.wall_before = checkpoint["wall_time_s"]
            for callback in self.callbacks:
                if callback_name(callback) in checkpoint["callbacks"]:
                    callback.load_state_dict(checkpoint["callbacks"][callback_name(callback)])
            progress.message(f"resumed at iteration {self.iteration}, env step {self.env_steps}")
        self.first_iteration, self.first_step = self.iteration, self.env_steps
        self.restarts_before = (list(self.worker_restarts), self.learner_restarts)
        self.planned_steps = planned_steps(config, self.env_steps)
        self.saved_at, self.best_saved = self.iteration, self.tracker.best_mean_return
        # A resume drops what an earlier session wrote after its checkpoint; a fresh start in a
        # directory whose earlier start wrote no checkpoint drops all of it.
        purge = self.env_steps + 1 if self.env_steps else (0 if any(path.glob("events.out.tfevents.*")) else None)
        self.writer = MetricsWriter(path, config, enabled=config.logging.tensorboard, purge_step=purge)
        self.start = self.launched = launched or time.perf_counter()
        self.driver_cpu = time.process_time()
        self.ended: float | None = None  # when the loop ended: waiting for a last evaluation is not training
        self.ratio_warnings = 0
        self.writing_checkpoint = threading.Lock()  # see abandon()

    def run(self, stop: GracefulStop) -> None:
        """Iterate to the step budget, a stop request or a callback's stop, then end the session."""
        try:
            self.begin()
            while not self.done and stop.requested is None:
                self.step()
        except BaseException:
            self.finish(completed=False)
            raise
        self.conclude()

    def conclude(self) -> None:
        """End the session (final checkpoint), then finish it whether or not that worked."""
        completed = False
        try:
            self.end()
            completed = True
        finally:
            self.finish(completed)

    @property
    def done(self) -> bool:
        return self.env_steps >= self.planned_steps or self.stopped_by is not None

    def begin(self) -> None:
        for callback in self.callbacks:
            callback.on_start(self.view)
        self.start = time.perf_counter()  # the evaluation actor's start-up is not training time
        self.driver_cpu = time.process_time()

    def step(self) -> IterationReport:
        """One iteration, and its periodic checkpoint when one is due."""
        report = self._iterate()
        every = self.config.checkpoint.every
        if every and self.iteration % every == 0:
            self._save()
        return report

    def end(self) -> None:
        """The final checkpoint (unless the newest one is of this iteration)."""
        if self.iteration > self.saved_at:
            self._save()
        self.ended = time.perf_counter()

    def finish(self, completed: bool) -> None:
        """Tell the callbacks, then stop the runtime and close the writer."""
        try:
            for callback in self.callbacks:
                callback.on_end(self.view, completed)
        finally:
            self._close(discard=not completed)

    def finish_summary(self, request: str | None = None) -> dict:
        """Write summary.json and say the run's result in one line. `request`: who asked the run
        to stop from outside (a signal, a sweep's scheduler), if anyone did."""
        summary = self.summary(stopped_by=request or self.stopped_by)
        write_json(self.path / "summary.json", summary)
        self.progress.message(
            f"{'stopped' if request else 'done'}: {summary['env_steps']} steps in {summary['wall_time_s']:.1f}s "
            f"of training ({summary['steps_per_s']:.0f} steps/s; start-up {summary['startup_s']:.1f}s more)"
            f"{self._session_note()}, mean return (last 20) {_number(summary['mean_return_last20'])}, "
            f"solved at step {summary['solved_at_step']}"
        )
        return summary

    def abandon(self, reason: str) -> None:
        """The cluster under the run is gone (the embedded Ray's raylet or GCS died), and this
        process with it: keep what can be kept (the events so far, summary.json) and say which
        checkpoint to continue from, as the last line."""
        self.writing_checkpoint.acquire(timeout=30)  # one being written lands first; none starts after
        with suppress(Exception):  # a writer that fails now must not cost the summary
            self.writer.flush()
        write_json(self.path / "summary.json", self.summary(stopped_by=reason))
        print(f"error: {reason} at env step {self.env_steps}; {resume_hint(self.path)}", file=sys.stderr, flush=True)

    def _session_note(self) -> str:
        """What a resumed session did, when the run's figures are not all its own."""
        trained = self.env_steps - self.first_step
        if not trained:
            return f"; nothing trained: the run was at step {self.env_steps} of {self.planned_steps} already"
        return f"; this session trained {trained} of them" if self.first_step else ""

    def _close(self, discard: bool) -> None:
        """Stop the runtime, close the writer and let go of the run directory (removing one
        this session made when it failed before its first iteration)."""
        ran = self.iteration > self.first_iteration
        try:
            self.runtime.close()
            self.progress.close()
            self.writer.close(self.tracker.mean_return, self.env_steps, ran=ran)
        finally:
            release_run_dir(self.path, discard=discard and not ran)

    def _iterate(self) -> IterationReport:
        iteration_start = time.perf_counter()
        stats = self.runtime.iterate()
        self.iteration += 1
        self.env_steps += self.config.steps_per_iteration
        self.tracker.add(stats.episodes.returns, self.env_steps)
        for agent, tracker in self.agent_trackers.items():
            tracker.add(
                [r for r, who in zip(stats.episodes.returns, stats.episodes.agents) if who == agent], self.env_steps
            )
        now = time.perf_counter()
        steps_per_s = (self.env_steps - self.first_step) / (now - self.start)
        workers_before, learner_before = self.restarts_before
        self.worker_restarts = [a + b for a, b in zip(workers_before, stats.worker_restarts)]
        self.learner_restarts = learner_before + stats.learner_restarts
        scalars = iteration_scalars(stats, now - iteration_start, steps_per_s, self.worker_restarts, self.config)
        scalars["learner/restarts"] = float(self.learner_restarts)
        cpu = time.process_time()  # this process, Ray's threads in it included; the previous write too
        scalars["perf/driver_cpu_s"], self.driver_cpu = cpu - self.driver_cpu, cpu
        if len(self.tracker.recent) >= WINDOW:  # what solved_at_step and the summary judge by
            scalars["charts/mean_return_last20"] = self.tracker.mean_return
        self.writer.write(scalars, self.env_steps)
        self._check_ratio(stats)
        self.progress.update(self.env_steps, self.tracker.mean_return, steps_per_s)
        report = IterationReport(self.iteration, self.env_steps, scalars, self.path, self.wall_time_s)
        for callback in self.callbacks:
            if callback.on_iteration(report) and self.stopped_by is None:
                self.stopped_by = f"callback {callback_name(callback)}"
                self.progress.message(f"{callback_name(callback)} stopped the run at env step {self.env_steps}")
        return report

    def _check_ratio(self, stats: IterationStats) -> None:
        """Warn loudly when the first minibatch's PPO ratio is not 1 on an on-policy iteration:
        workers and learner then disagree on normalization, hidden states or resets."""
        deviation = stats.metrics["losses/first_minibatch_ratio_dev"]
        tolerance = BF16_RATIO_TOLERANCE if stats.metrics.get("perf/learner_bf16") else RATIO_TOLERANCE
        if deviation > tolerance and stats.policy_lag == 0:
            self.ratio_warnings += 1
            if self.ratio_warnings in (1, 10, 100) or self.ratio_warnings % 1000 == 0:
                self.progress.message(
                    f"WARNING: first-minibatch PPO ratio deviates from 1 by {deviation:.2e} at env step "
                    f"{self.env_steps} ({self.ratio_warnings} iterations so far): rollouts and learner disagree"
                )

    def checkpoint_state(self) -> dict:
        """Everything of a checkpoint but the runtime's state, as of now."""
        state = {
            "config": self.config.model_dump(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_time_s": self.wall_time_s,
            "restarts": list(self.worker_restarts),
            "learner_restarts": self.learner_restarts,
            "tracker": self.tracker.state_dict(),
            "agent_trackers": {agent: tracker.state_dict() for agent, tracker in self.agent_trackers.items()},
            "spaces": self.spaces,
        }
        states = {callback_name(callback): callback.state_dict() for callback in self.callbacks}
        state["callbacks"] = {name: value for name, value in states.items() if value is not None}
        return state

    def full_state(self) -> dict:
        """A checkpoint's contents: the session's state and the runtime's (the learner's included)."""
        return {**self.checkpoint_state(), "runtime": self.runtime.state_dict()}

    def _save(self) -> None:
        # best.pt follows the training episodes' mean return, unless a callback keeps it (evaluation).
        improved = self.tracker.best_mean_return > self.best_saved or self.saved_at == 0
        state = self.full_state()
        self.writer.flush()  # every point up to this checkpoint is on disk before it exists
        with self.writing_checkpoint:
            save_checkpoint(self.path, state, self.config.checkpoint.keep_last, improved and not self.best_by_callback)
        self.saved_at, self.best_saved = self.iteration, max(self.best_saved, self.tracker.best_mean_return)

    def save_best(self, weights: PolicyWeights) -> Path:
        """best.pt of `weights`' moment: the optimizer's state of then is fetched only now."""
        learner = {**fetch(weights.learner.weights), "optimizer": fetch(weights.learner.optimizer)}
        runtime = {"learner": learner, "worker_rng": [], "rng": capture_rng()}
        return save_best_checkpoint(self.path, {**weights.session_state, "runtime": runtime})

    @property
    def wall_time_s(self) -> float:
        """Training wall time over all sessions of the run."""
        return self.wall_before + (self.ended or time.perf_counter()) - self.start

    def summary(self, stopped_by: str | None = None) -> dict:
        config, tracker, wall = self.config, self.tracker, self.wall_time_s
        return (
            {
                "env_id": config.env.id,
                "env_steps": self.env_steps,
                "iterations": self.iteration,
                "episodes": tracker.episodes,
                "wall_time_s": round(wall, 3),
                "startup_s": round(self.start - self.launched, 3),
                "steps_per_s": round(self.env_steps / wall, 1) if wall > 0 else 0.0,
                "mean_return_last20": tracker.mean_return,
                "best_mean_return": tracker.best_mean_return if tracker.episodes >= WINDOW else None,
                "reward_threshold": tracker.reward_threshold,
                "solved_at_step": tracker.solved_at_step,
                "execution": config.execution,
                "worker_restarts": sum(self.worker_restarts),
                "learner_restarts": self.learner_restarts,
                "interrupted_by": stopped_by,
                "run_dir": str(self.path),
            }
            | self._agents_summary()
            | {key: value for callback in self.callbacks for key, value in callback.summary().items()}
        )

    def _agents_summary(self) -> dict:
        """A multi-agent run's: each agent's episodes and mean return (last 20), and each policy's."""
        if not self.groups:
            return {}
        agents = {
            agent: {
                "episodes": tracker.episodes,
                "mean_return_last20": tracker.mean_return if tracker.episodes else None,
            }
            for agent, tracker in self.agent_trackers.items()
        }
        policies = {}
        for name, members in self.groups.items():
            means = [agents[a]["mean_return_last20"] for a in members if agents[a]["episodes"]]
            policies[name] = {"agents": list(members), "mean_return_last20": float(np.mean(means)) if means else None}
        return {"agents": agents, "policies": policies}
