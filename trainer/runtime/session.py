"""Starting a run: `train()` (the Python API, and what the CLI calls) and `open_session()`, which
sweep trials share: pre-flight, the run directory, the runtime (in-process in inline.py, Ray
actors in ray_runtime.py), then the TrainingSession (training_session.py) that iterates it until
total_steps or a stop signal.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainer.core.action_masks import describe_source
from trainer.core.agents import AgentsProbe, describe_agents
from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.process import set_up_process
from trainer.runtime.callbacks import as_callbacks
from trainer.runtime.checkpoint import (
    CHECKPOINT_DIR,
    periodic_checkpoints,
    set_aside_later_checkpoints,
)
from trainer.runtime.evaluation import Evaluation
from trainer.runtime.inline import InlineRuntime
from trainer.runtime.preflight import preflight
from trainer.runtime.progress import ProgressReporter
from trainer.runtime.ray_connect import watch_embedded_ray
from trainer.runtime.ray_runtime import RayRuntime
from trainer.runtime.resume import config_changes, resolve_run
from trainer.runtime.run_dir import create_run_dir, release_run_dir, run_path
from trainer.runtime.stopping import GracefulStop
from trainer.runtime.training_session import TrainingSession, planned_steps, resume_hint


class TrainingStopped(UserError):
    """Stopped by a signal (after writing a final checkpoint, unless a second signal came)."""

    exit_code = 130


def make_runtime(config: Config, probe: Probe, address: str | None, log):
    if config.execution == "ray":
        return RayRuntime(config, probe, address=address, log=log)
    set_up_process(config, "inline")  # this process runs learner and workers
    return InlineRuntime(config, probe)


def train(
    config: str | Path | dict | Config | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run_dir: str | Path | None = None,
    run_name: str | None = None,
    address: str | None = None,
    resume: str | Path | None = None,
    callbacks: list = (),
) -> dict:
    """Train PPO as the config says and return the run summary (also written to summary.json).

    `resume` continues a run from its newest checkpoint (a run directory or a checkpoint file),
    in the same run directory; `overrides` still apply, and workers, envs per worker and rollout
    length may differ from the checkpoint's. `resume="auto"` continues `run_dir` if it has a
    checkpoint, else starts it. `address` attaches to a running Ray cluster (else RAY_ADDRESS,
    else an embedded local Ray). `callbacks`: Callback objects or functions of an
    IterationReport, called after every iteration; one that returns True stops the run (see
    trainer/runtime/callbacks.py)."""
    launched = time.perf_counter()
    config, checkpoint, run_dir = resolve_run(config, overrides, resume, run_dir)
    with GracefulStop() as stop:
        session = open_session(
            config, checkpoint, run_dir, run_name=run_name, address=address, callbacks=callbacks, launched=launched,
            stop=stop,
        )  # fmt: skip
        path = session.path
        try:
            stop.install()  # ray.init() put in its own SIGTERM handler (exit at once): take SIGTERM back
            if getattr(session.runtime, "started_ray", False):
                watch_embedded_ray(session.abandon)
            stop.training = True
            session.run(stop)
        except KeyboardInterrupt:
            second = stop.requested or "signal"
            raise TrainingStopped(f"stopped at once by a second {second}; {resume_hint(path)}") from None
        except UserError as exc:
            if periodic_checkpoints(path / CHECKPOINT_DIR):
                exc.args = (f"{exc}; {resume_hint(path)}",)
            raise
    summary = session.finish_summary(stop.requested)
    if stop.requested:
        raise TrainingStopped(f"stopped by {stop.requested} at env step {summary['env_steps']}; {resume_hint(path)}")
    return summary


def open_session(
    config: Config,
    checkpoint: dict | None,
    run_dir: str | Path | None,
    *,
    run_name: str | None = None,
    address: str | None = None,
    callbacks=(),
    launched: float | None = None,
    stream=None,
    owns_dir: bool = False,
    stop: GracefulStop | None = None,
) -> TrainingSession:
    """How `train()` and a sweep's trial start a session: pre-flight (nothing written yet), the run
    directory and progress reporter (on `stream`, else stdout), then the runtime. `owns_dir`: the
    directory is this run's whatever it holds (a sweep's trial). A start that fails lets go of
    the run directory, removing it if it made it. `stop`: told where to say what a signal does."""
    probe = preflight(config, checkpoint, address)
    path, progress = prepare_run(config, probe, checkpoint, run_dir, run_name, stream, owns_dir)
    if stop is not None:
        stop.say = progress.message
    try:
        return start_session(config, path, probe, address, progress, checkpoint, callbacks, launched)
    except BaseException:
        release_run_dir(path, discard=True)
        raise


def prepare_run(
    config: Config,
    probe: Probe,
    checkpoint: dict | None,
    run_dir: str | Path | None,
    run_name: str | None = None,
    stream=None,
    owns_dir: bool = False,
) -> tuple[Path, ProgressReporter]:
    """The run directory (locked) and the progress reporter, with what the start says first."""
    resuming = checkpoint is not None or owns_dir
    path = create_run_dir(config, run_path(config, run_dir, run_name), resuming, wait_for_lock_s=30 if owns_dir else 0)
    first_step = checkpoint["env_steps"] if checkpoint is not None else 0
    planned = planned_steps(config, first_step)
    progress = ProgressReporter(planned, config.logging.progress_interval_s, stream)
    progress.message(f"run directory: {path}")
    if checkpoint is not None:
        moved, target = set_aside_later_checkpoints(path / CHECKPOINT_DIR, checkpoint["iteration"])
        if moved:
            progress.message(
                f"resuming from iteration {checkpoint['iteration']}, before the newest checkpoint: "
                f"{', '.join(p.name for p in moved)} moved to {target} (this run's new timeline replaces them)"
            )
    if checkpoint is not None and (changes := config_changes(checkpoint["config"], config)):
        source = (
            f" ({checkpoint['edited_config']} differs from the checkpoint's config)"
            if checkpoint.get("edited_config")
            else ""
        )
        progress.message(f"resuming with {', '.join(changes)}{source}")
    if planned != config.ppo.total_steps:
        progress.message(
            f"ppo.total_steps={config.ppo.total_steps} is not a whole number of iterations of "
            f"{config.steps_per_iteration} env steps (ppo.rollout_steps x workers.num_workers x "
            f"workers.envs_per_worker); training {planned}"
        )
    if isinstance(probe, AgentsProbe):
        for line in describe_agents(probe, config.env.action_mask_key):
            progress.message(line)
        return path, progress
    for key in probe.obs_spec.dropped:
        progress.message(f"observation {key!r} of {config.env.id!r} holds no numbers; it is left out")
    if probe.obs_spec.mask_source is not None:
        where = describe_source(probe.obs_spec.mask_source, config.env.action_mask_key)
        progress.message(f"action masks of {config.env.id!r} from {where}: only legal actions are taken")
    return path, progress


def start_session(config, path, probe, address, progress, checkpoint, callbacks, launched) -> TrainingSession:
    """Start the runtime (actors, or the in-process one) and the session around it."""
    runtime = make_runtime(config, probe, address, progress.message)
    try:
        hooks = as_callbacks(callbacks)
        if config.eval.every:
            hooks.insert(0, Evaluation(config, probe, progress.message))
        return TrainingSession(config, path, probe, runtime, progress, checkpoint, hooks, launched)
    except BaseException:
        runtime.close()
        raise
