"""TensorBoard logging: one event file per run directory, every scalar indexed by env step.

Tag prefixes group the dashboard: `charts/` (returns, lengths, learning rate), `losses/` (PPO
terms and diagnostics), `perf/` (throughput and per-phase times), `workers/` (per worker),
`normalizer/` (observation and return statistics); multi-agent runs add `policies/<name>/`
(each policy's losses and normalizer) and `agents/<id>/` (each agent's returns).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from trainer.core.config import Config, dump_config, is_opaque
from trainer.core.errors import UserError
from trainer.core.messages import EpisodeStats
from trainer.core.timing import PHASE_PREFIX, PHASE_SUFFIX, is_phase, phase_tag
from trainer.runtime.stats import IterationStats

FINAL_RETURN_TAG = "hparams/final_mean_return"


def iteration_scalars(
    stats: IterationStats, iteration_s: float, steps_per_s: float, restarts: list[int], config: Config
) -> dict[str, float]:
    """Every scalar of one iteration, by tag: the learner's and the runtime's as they come (their
    sources name them by tag), episode returns (when an episode ended), throughput, each phase's
    share of the iteration, and per-worker figures."""
    scalars = dict(stats.metrics)
    episodes = stats.episodes
    if episodes.returns:
        for name, values in (("return", episodes.returns), ("length", episodes.lengths)):
            scalars[f"charts/episodic_{name}_mean"] = float(np.mean(values))
            scalars[f"charts/episodic_{name}_min"] = float(np.min(values))
            scalars[f"charts/episodic_{name}_max"] = float(np.max(values))
    scalars["charts/episodes"] = float(len(episodes.returns))
    for agent in sorted(set(episodes.agents)):  # a multi-agent run's episodes, each agent's own
        scalars[f"agents/{agent}/episodic_return"] = float(
            np.mean([ret for ret, who in zip(episodes.returns, episodes.agents) if who == agent])
        )
    scalars["perf/steps_per_s"] = steps_per_s
    scalars["perf/policy_lag"] = float(stats.policy_lag)
    scalars["perf/iteration_s"] = iteration_s
    for tag, seconds in stats.metrics.items():
        if is_phase(tag):
            scalars[tag.removesuffix(PHASE_SUFFIX) + "_share"] = seconds / iteration_s if iteration_s > 0 else 0.0
    rollouts = [timings[phase_tag("rollout")] for timings in stats.worker_timings]
    if rollouts:
        # What the iteration spent beyond the slowest rollout: dispatch, waiting, the update where
        # it does not overlap the rollouts. It is what grows with the worker count, if anything.
        scalars["perf/slowest_rollout_s"] = max(rollouts)
        scalars["perf/coordination_s"] = iteration_s - max(rollouts)
    steps_per_worker = config.ppo.rollout_steps * config.workers.envs_per_worker
    for index, timings in enumerate(stats.worker_timings):
        busy = timings[phase_tag("env")] + timings[phase_tag("forward")]
        scalars[f"workers/{index}/steps_per_s"] = steps_per_worker / busy if busy > 0 else 0.0
        for name, value in timings.items():  # the worker's phases as workers/<i>/env_s, ...
            scalars[f"workers/{index}/{name.removeprefix(PHASE_PREFIX)}"] = value
    for index, count in enumerate(restarts):
        scalars[f"workers/{index}/restarts"] = float(count)
    scalars["workers/restarts_total"] = float(sum(restarts))
    return scalars


def iteration_tags(metrics: Iterable[str], worker_timings: Iterable[str], config: Config) -> tuple[set[str], set[str]]:
    """The tags iteration_scalars gives, from the tags of the runtime's metrics and of one
    worker's timings: (those of every iteration, those only of one in which an episode ended).
    Read off iteration_scalars itself, so that they cannot drift from it."""
    workers = config.workers.num_workers
    values, timings = dict.fromkeys(metrics, 1.0), dict.fromkeys(worker_timings, 1.0)

    def tags(episodes: EpisodeStats) -> set[str]:
        stats = IterationStats(metrics=values, episodes=episodes, worker_timings=[timings] * workers)
        return set(iteration_scalars(stats, 1.0, 1.0, [0] * workers, config))

    every = tags(EpisodeStats())
    return every, tags(EpisodeStats(returns=[1.0], lengths=[1])) - every


class TensorBoardWriteError(UserError):
    """The event file could not be written (a full disk, a lost mount)."""


def _quiet_writer_thread(previous):
    """A thread hook that leaves out the traceback TensorBoard's writer thread prints when a
    write fails: the writer keeps the error, and the next call reports it as one line."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook.quiets_tensorboard = True
    return hook


class MetricsWriter:
    """A SummaryWriter on the run directory, or nothing at all when logging is off. A failed
    write (TensorBoard's writer thread reports it on the next call) stops the run in one line
    and turns the writer off, so closing it does not fail a second time."""

    def __init__(self, run_dir: Path, config: Config, enabled: bool = True, purge_step: int | None = None) -> None:
        """`purge_step`: on resume (checkpoint step + 1), TensorBoard drops points at or after
        this step that an earlier session wrote after its last checkpoint, so curves never
        rewind or repeat."""
        self.config, self.run_dir = config, run_dir
        self.writer = None
        if enabled:
            if not getattr(threading.excepthook, "quiets_tensorboard", False):
                threading.excepthook = _quiet_writer_thread(threading.excepthook)
            with self._reporting():
                self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=10, purge_step=purge_step)
                if not purge_step:  # a new run (0: one restarted in a directory with no checkpoint)
                    self.writer.add_text("config", "```yaml\n" + dump_config(config) + "```", 0)

    @contextmanager
    def _reporting(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            writer, self.writer = self.writer, None
            if writer is not None:
                with suppress(Exception):
                    writer.close()
            raise TensorBoardWriteError(
                f"could not write TensorBoard events in {self.run_dir}: {exc.strerror or exc}; "
                "free the disk (or set logging.tensorboard: false)"
            ) from None

    def write(self, scalars: dict[str, float], env_step: int) -> None:
        if self.writer is None:
            return
        # One event holding every scalar of the iteration: a tenth of the cost of one
        # add_scalar() per tag, for the same curves.
        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        with self._reporting():
            self.writer.file_writer.add_summary(Summary(value=values), env_step)

    def write_animation(self, tag: str, gif: bytes, frame_shape: tuple[int, ...], env_step: int) -> None:
        """An animated GIF in the Images dashboard (how TensorBoard shows a video)."""
        if self.writer is None:
            return
        height, width, *channels = frame_shape
        image = Summary.Image(
            height=height, width=width, colorspace=channels[0] if channels else 1, encoded_image_string=gif
        )
        with self._reporting():
            self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), env_step)

    def flush(self) -> None:
        """Put every point written so far on disk: called before each checkpoint, so a crash
        loses no point the resumed run will not write again."""
        if self.writer is not None:
            with self._reporting():
                self.writer.flush()

    def close(self, final_mean_return: float, env_step: int, ran: bool = True) -> None:
        """Record the config as hparams with the final mean return as their metric (unless this
        session ran no iteration, e.g. resuming a finished run: the point exists already)."""
        if self.writer is None:
            return
        with self._reporting():
            if ran and math.isfinite(final_mean_return):
                for summary in hparams(flat_hparams(self.config), {FINAL_RETURN_TAG: final_mean_return}):
                    self.writer.file_writer.add_summary(summary, env_step)
                self.writer.add_scalar(FINAL_RETURN_TAG, final_mean_return, env_step)
            self.writer.close()
            self.writer = None


def flat_hparams(config: Config) -> dict[str, float | int | str | bool]:
    """`section.key: value` for every scalar config value (lists and opaque mappings as text)."""
    flat: dict[str, float | int | str | bool] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and not is_opaque(name):
                walk(f"{name}.", value)
            elif isinstance(value, bool | int | float | str):
                flat[name] = value
            elif value is not None:
                flat[name] = str(value)

    walk("", config.model_dump())
    return flat
