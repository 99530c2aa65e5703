"""Evaluate a checkpoint (or an exported `.pt2` policy): whole episodes with the saved
preprocessing, reported as mean +- std return and length; optionally an MP4 of the first.

It runs what evaluation during training runs (trainer/core/episodes.py) with the checkpoint's
`eval` settings (episodes, deterministic, seed, envs, `eval.env`), so for the same weights it
gives the same returns as the eval/* curve at that step.
"""

from __future__ import annotations

from pathlib import Path

from trainer.core.episodes import run_episodes
from trainer.core.errors import UserError
from trainer.core.video import write_mp4
from trainer.inference import load_policy


def evaluate(
    target: str | Path,
    episodes: int | None = None,
    deterministic: bool | None = None,
    video_dir: str | Path | None = None,
    seed: int | None = None,
) -> dict:
    """`None` takes the checkpoint config's `eval.*` value; an exported policy is deterministic."""
    if episodes is not None and episodes < 1:
        raise UserError(f"evaluate needs at least 1 episode, got {episodes} (--episodes N)")
    policy = load_policy(target)
    settings = policy.config.eval
    if deterministic is None:
        deterministic = settings.deterministic or policy.iteration is None
    results = run_episodes(
        policy.network,
        policy.obs_spec,
        policy.config.eval_env,
        settings.episodes if episodes is None else episodes,
        deterministic=deterministic,
        seed=settings.seed if seed is None else seed,
        num_envs=settings.num_envs,
        record=video_dir is not None,
    )
    result = {
        "episodes": len(results.returns),
        "deterministic": deterministic,
        **results.summary(),
        "returns": results.returns,
    }
    if video_dir is not None:
        result["video"] = str(write_mp4(results.frames, Path(video_dir) / "episode_0.mp4", results.fps))
    return result
