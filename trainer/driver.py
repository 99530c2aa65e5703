"""The training loop: publish a snapshot, collect rollouts, learn, log; until total_steps.

`train()` is the Python API and what the CLI calls. The runtime (in-process or Ray actors)
provides `iterate()`; everything around it (run directory, tracking, summary) is shared.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainer.config import Config, load_config
from trainer.learner import Learner
from trainer.metrics import MetricsWriter, iteration_scalars
from trainer.progress import ProgressReporter
from trainer.rollout import EpisodeStats, IterationStats
from trainer.run_dir import create_run_dir, write_json
from trainer.tracking import WINDOW, EpisodeTracker


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

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def train(
    config: str | Path | dict | Config,
    overrides: list[str] | tuple[str, ...] = (),
    run_dir: str | Path | None = None,
    run_name: str | None = None,
    address: str | None = None,
) -> dict:
    """Train PPO as the config says and return the run summary (also written to summary.json).
    `address` attaches to a running Ray cluster (else RAY_ADDRESS, else an embedded local Ray)."""
    from workers.envs import probe_env

    config = load_config(config, overrides)
    observation_space, action_space, threshold = probe_env(config.env)
    path = create_run_dir(config, run_dir, run_name)
    progress = ProgressReporter(config.num_iterations * config.steps_per_iteration, config.logging.progress_interval_s)
    progress.message(f"run directory: {path}")
    writer = MetricsWriter(path, config, enabled=config.logging.tensorboard)
    tracker = EpisodeTracker(threshold)
    start = time.perf_counter()
    env_steps = 0
    runtime = make_runtime(config, observation_space, action_space, address, progress.message)
    try:
        for _ in range(config.num_iterations):
            iteration_start = time.perf_counter()
            stats = runtime.iterate()
            env_steps += config.steps_per_iteration
            tracker.add(stats.episodes.returns, env_steps)
            now = time.perf_counter()
            steps_per_s = env_steps / (now - start)
            writer.write(
                iteration_scalars(stats, now - iteration_start, steps_per_s, runtime.restarts, config), env_steps
            )
            progress.update(env_steps, tracker.mean_return)
    finally:
        runtime.close()
        progress.close()
        writer.close(tracker.mean_return, env_steps)
    summary = run_summary(config, tracker, env_steps, time.perf_counter() - start, sum(runtime.restarts), path)
    write_json(path / "summary.json", summary)
    progress.message(
        f"done: {env_steps} steps in {summary['wall_time_s']:.1f}s ({summary['steps_per_s']:.0f} steps/s), "
        f"mean return (last 20) {tracker.mean_return:.1f}, solved at step {tracker.solved_at_step}"
    )
    return summary


def make_runtime(config: Config, observation_space, action_space, address: str | None, log):
    if config.execution == "ray":
        from trainer.ray_runtime import RayRuntime

        return RayRuntime(config, observation_space, action_space, address=address, log=log)
    return InlineRuntime(config, observation_space, action_space)


def run_summary(
    config: Config, tracker: EpisodeTracker, env_steps: int, wall: float, restarts: int, path: Path
) -> dict:
    return {
        "env_id": config.env.id,
        "env_steps": env_steps,
        "iterations": env_steps // config.steps_per_iteration,
        "episodes": tracker.episodes,
        "wall_time_s": round(wall, 3),
        "steps_per_s": round(env_steps / wall, 1),
        "mean_return_last20": tracker.mean_return,
        "best_mean_return": tracker.best_mean_return if tracker.episodes >= WINDOW else None,
        "reward_threshold": tracker.reward_threshold,
        "solved_at_step": tracker.solved_at_step,
        "execution": config.execution,
        "worker_restarts": restarts,
        "run_dir": str(path),
    }
