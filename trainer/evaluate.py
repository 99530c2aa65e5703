"""Evaluate a checkpoint (or an exported `.pt2` policy): whole episodes with the saved
preprocessing, reported as mean +- std return and length; optionally an MP4 of the first.

It runs what evaluation during training runs (trainer/core/episodes.py) with the checkpoint's
`eval` settings (episodes, deterministic, seed, envs, `eval.env`), so for the same weights it
gives the same returns as the eval/* curve at that step. Its arguments, the video directory and
the env's frames are checked before any episode runs.
"""

from __future__ import annotations

from pathlib import Path

from trainer.agent_evaluation import agents_checkpoint, evaluate_agents
from trainer.core.episodes import run_episodes
from trainer.core.errors import UserError
from trainer.core.video import VIDEO_FILE, VideoError, check_renders, require_video, save_video
from trainer.export import unwritable
from trainer.inference import load_policy

MAX_SEED = 2**64 - 1  # the sampling generator's (torch.Generator.manual_seed) largest seed


def evaluate(
    target: str | Path,
    episodes: int | None = None,
    deterministic: bool | None = None,
    video_dir: str | Path | None = None,
    seed: int | None = None,
    opponent: str | None = None,
) -> dict:
    """`None` takes the checkpoint config's `eval.*` value; an exported policy is deterministic.
    A multi-agent checkpoint: see evaluate_agents (`opponent` is its eval.opponent)."""
    if episodes is not None and episodes < 1:
        raise UserError(f"evaluate needs at least 1 episode, got {episodes} (--episodes N)")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UserError(f"evaluate --seed must be between 0 and 2**64 - 1 (env i is reset with seed + i), got {seed}")
    if video_dir is not None:
        require_video()
        check_video_dir(Path(video_dir))
    if agents_checkpoint(target):
        return evaluate_agents(target, episodes, deterministic, seed, opponent, video_dir and Path(video_dir))
    if opponent is not None:
        raise UserError("evaluate --opponent plays against a multi-agent run's self-play policy; leave it out here")
    policy = load_policy(target)
    settings = policy.config.eval
    if video_dir is not None:
        check_renders(policy.config.eval_env, "evaluate without --video")
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
        result["video"] = save_video(results.frames, results.fps, Path(video_dir), VIDEO_FILE)
    return result


def check_video_dir(directory: Path) -> None:
    """--video DIR must be a directory (made if missing) that episode_0.mp4 can be written in."""
    if (problem := unwritable(directory)) is not None:
        raise VideoError(
            f"evaluate --video {directory}: {problem}; give a directory you can write ({VIDEO_FILE} goes in it)"
        )
