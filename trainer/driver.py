"""The training loop: publish a snapshot, collect rollouts, learn, log, checkpoint; until
total_steps or a stop signal.

`train()` is the Python API and what the CLI calls. A runtime (in-process here, Ray actors in
ray_runtime.py) provides `iterate()` and its state for checkpoints; everything around it (run
directory, tracking, TensorBoard, checkpoints, summary) is shared.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainer.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from trainer.config import Config, load_config
from trainer.errors import UserError
from trainer.learner import Learner
from trainer.metrics import MetricsWriter, iteration_scalars
from trainer.progress import ProgressReporter
from trainer.rollout import EpisodeStats, IterationStats
from trainer.run_dir import create_run_dir, write_json
from trainer.stopping import GracefulStop
from trainer.tracking import WINDOW, EpisodeTracker


class TrainingStopped(UserError):
    """Stopped by a signal after writing a final checkpoint."""

    exit_code = 130


class InlineRuntime:
    """Learner and workers in this process, no Ray: for debugging, profiling and fast tests."""

    def __init__(self, config: Config, observation_space, action_space) -> None:
        from workers.rollout_worker import RolloutWorker

        self.learner = Learner(config, observation_space, action_space)
        self.workers = [RolloutWorker(config, i) for i in range(config.workers.num_workers)]
        self.restarts = [0] * config.workers.num_workers  # in-process workers are never replaced

    def iterate(self) -> IterationStats:
        snapshot = self.learner.snapshot()
        start = time.perf_counter()
        rollouts = [worker.collect(snapshot) for worker in self.workers]
        collect_time = time.perf_counter() - start
        metrics = self.learner.learn(rollouts)
        metrics["collect_time_s"] = collect_time
        episodes = EpisodeStats.concat([rollout.episodes for rollout in rollouts])
        return IterationStats(metrics, episodes, [rollout.timings for rollout in rollouts])

    def state_dict(self) -> dict:
        return {
            "learner": self.learner.state_dict(),
            "worker_rng": [worker.rng_state() for worker in self.workers],
            "rng": capture_rng(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state["learner"])
        for worker, rng in zip(self.workers, state["worker_rng"]):
            worker.resume(rng, state["learner"]["iteration"])
        restore_rng(state["rng"])

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def make_runtime(config: Config, observation_space, action_space, address: str | None, log):
    if config.execution == "ray":
        from trainer.ray_runtime import RayRuntime

        return RayRuntime(config, observation_space, action_space, address=address, log=log)
    return InlineRuntime(config, observation_space, action_space)


def train(
    config: str | Path | dict | Config | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run_dir: str | Path | None = None,
    run_name: str | None = None,
    address: str | None = None,
    resume: str | Path | None = None,
) -> dict:
    """Train PPO as the config says and return the run summary (also written to summary.json).

    `resume` continues a run from its newest checkpoint (a run directory or a checkpoint file),
    in the same run directory; `overrides` still apply. `address` attaches to a running Ray
    cluster (else RAY_ADDRESS, else an embedded local Ray)."""
    from workers.envs import probe_env

    checkpoint = None
    if resume is not None:
        checkpoint_path, checkpoint = load_checkpoint(resume)
        config = load_config(checkpoint["config"] if config is None else config, overrides)
        run_dir = checkpoint_path.parent.parent
    elif config is None:
        raise UserError("train needs a config file, or --resume RUN_DIR to continue a run")
    else:
        config = load_config(config, overrides)
    observation_space, action_space, threshold = probe_env(config.env)
    spaces = {"observation": str(observation_space), "action": str(action_space)}
    if checkpoint is not None and checkpoint["spaces"] != spaces:
        raise UserError(
            f"checkpoint {checkpoint_path} was written for observation/action spaces {checkpoint['spaces']}, "
            f"but env {config.env.id!r} has {spaces}"
        )
    path = create_run_dir(config, run_dir, run_name, resuming=checkpoint is not None)
    with GracefulStop() as stop:
        return _run(config, path, spaces, threshold, checkpoint, address, stop, observation_space, action_space)


def _run(config, path, spaces, threshold, checkpoint, address, stop, observation_space, action_space) -> dict:
    progress = ProgressReporter(config.num_iterations * config.steps_per_iteration, config.logging.progress_interval_s)
    progress.message(f"run directory: {path}")
    tracker = EpisodeTracker(threshold)
    iteration, env_steps, wall_before = 0, 0, 0.0
    runtime = make_runtime(config, observation_space, action_space, address, progress.message)
    stop.install()  # ray.init() put in its own SIGTERM handler (exit at once): take SIGTERM back
    if checkpoint is not None:
        runtime.load_state_dict(checkpoint["runtime"])
        tracker.load_state_dict(checkpoint["tracker"])
        iteration, env_steps, wall_before = checkpoint["iteration"], checkpoint["env_steps"], checkpoint["wall_time_s"]
        runtime.restarts[:] = checkpoint["restarts"]
        progress.message(f"resumed at iteration {iteration}, env step {env_steps}")
    writer = MetricsWriter(
        path, config, enabled=config.logging.tensorboard, purge_step=env_steps + 1 if env_steps else None
    )
    start = time.perf_counter()
    saved_at = iteration
    best_saved = tracker.best_mean_return

    def save() -> None:
        nonlocal saved_at, best_saved
        is_best = tracker.best_mean_return > best_saved
        state = {
            "config": config.model_dump(),
            "iteration": iteration,
            "env_steps": env_steps,
            "wall_time_s": wall_before + time.perf_counter() - start,
            "restarts": list(runtime.restarts),
            "tracker": tracker.state_dict(),
            "spaces": spaces,
            "runtime": runtime.state_dict(),
        }
        writer.flush()
        save_checkpoint(path, state, config.checkpoint.keep_last, is_best or saved_at == 0)
        saved_at, best_saved = iteration, max(best_saved, tracker.best_mean_return)

    try:
        while iteration < config.num_iterations and stop.requested is None:
            iteration_start = time.perf_counter()
            stats = runtime.iterate()
            iteration += 1
            env_steps += config.steps_per_iteration
            tracker.add(stats.episodes.returns, env_steps)
            now = time.perf_counter()
            steps_per_s = (env_steps - (checkpoint or {}).get("env_steps", 0)) / (now - start)
            scalars = iteration_scalars(stats, now - iteration_start, steps_per_s, runtime.restarts, config)
            writer.write(scalars, env_steps)
            progress.update(env_steps, tracker.mean_return)
            if config.checkpoint.every and iteration % config.checkpoint.every == 0:
                save()
        if iteration > saved_at:
            save()
    finally:
        runtime.close()
        progress.close()
        writer.close(tracker.mean_return, env_steps, ran=iteration > (checkpoint or {}).get("iteration", 0))
    wall = wall_before + time.perf_counter() - start
    summary = run_summary(config, tracker, env_steps, wall, sum(runtime.restarts), path)
    summary["interrupted_by"] = stop.requested
    write_json(path / "summary.json", summary)
    progress.message(
        f"{'stopped' if stop.requested else 'done'}: {env_steps} steps in {wall:.1f}s "
        f"({summary['steps_per_s']:.0f} steps/s), mean return (last 20) {tracker.mean_return:.1f}, "
        f"solved at step {tracker.solved_at_step}"
    )
    if stop.requested:
        raise TrainingStopped(f"stopped by {stop.requested} at env step {env_steps}; checkpoint written in {path}")
    return summary


def run_summary(
    config: Config, tracker: EpisodeTracker, env_steps: int, wall: float, restarts: int, path: Path
) -> dict:
    return {
        "env_id": config.env.id,
        "env_steps": env_steps,
        "iterations": env_steps // config.steps_per_iteration,
        "episodes": tracker.episodes,
        "wall_time_s": round(wall, 3),
        "steps_per_s": round(env_steps / wall, 1) if wall > 0 else 0.0,
        "mean_return_last20": tracker.mean_return,
        "best_mean_return": tracker.best_mean_return if tracker.episodes >= WINDOW else None,
        "reward_threshold": tracker.reward_threshold,
        "solved_at_step": tracker.solved_at_step,
        "execution": config.execution,
        "worker_restarts": restarts,
        "run_dir": str(path),
    }
