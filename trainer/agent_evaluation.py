"""`trainer evaluate` of a multi-agent checkpoint (see trainer/core/agent_evaluator.py)."""

from __future__ import annotations

from pathlib import Path

from trainer.core.agent_evaluator import AgentEvaluator
from trainer.core.agents import probe_agents
from trainer.core.config import load_config
from trainer.core.video import VIDEO_FILE, check_renders, save_video
from trainer.inference import CHECKPOINT, stored_format
from trainer.runtime.agent_checkpoints import with_eval_opponent
from trainer.runtime.checkpoint import check_spaces, load_checkpoint


def agents_checkpoint(target: str | Path) -> bool:
    """Whether `target` is (a run directory of) a multi-agent run's checkpoint."""
    if not Path(target).is_dir() and stored_format(Path(target)) != CHECKPOINT:
        return False
    return "policies" in load_checkpoint(target)[1]["runtime"]["learner"]


def evaluate_agents(
    target: str | Path,
    episodes: int | None,
    deterministic: bool | None,
    seed: int | None,
    opponent: str | None,
    video_dir: Path | None = None,
) -> dict:
    """`trainer evaluate` of a multi-agent checkpoint, with its config's `eval` settings where
    an argument is None: what evaluation during training logs, as a dict; with `video_dir`, the
    first episode as an MP4 there."""
    path, state = load_checkpoint(target)
    config = load_config(state["config"], [f"eval.opponent={opponent}"] if opponent is not None else [])
    probe = probe_agents(config)
    check_spaces(state, probe, config.env.id, path)
    probe = with_eval_opponent(config, probe)
    if video_dir is not None:
        check_renders(config.eval_env, "evaluate without --video", agents=True)
    settings = config.eval
    deterministic = settings.deterministic if deterministic is None else deterministic
    evaluator = AgentEvaluator(config, probe)
    evaluator.load(state["runtime"]["learner"]["policies"])
    episodes = settings.episodes if episodes is None else episodes
    seed = settings.seed if seed is None else seed
    scalars, returns, filmed = evaluator.evaluate(episodes, deterministic, seed, record=video_dir is not None)
    result = {"episodes": episodes, "deterministic": deterministic, "agents": list(probe.agents),
              "opponent": settings.opponent, **scalars, "returns": returns}  # fmt: skip
    if filmed is not None:
        result["video"] = save_video(filmed.frames, filmed.fps, video_dir, VIDEO_FILE)
    return result


def describe_agent_result(result: dict) -> str:
    """One line of a multi-agent evaluation: against an opponent, the rates overall and in each
    seat; else each agent's mean return."""
    if "win_rate" not in result:
        agents = ", ".join(f"{agent} {result[f'agents/{agent}/return_mean']:.2f}" for agent in result["agents"])
        return f"{result['episodes']} episodes: mean return per agent {agents}"
    seats = [key.removesuffix("/win_rate") for key in result if key.startswith("as_") and key.endswith("/win_rate")]
    return f"{result['episodes']} episodes against {result['opponent']}: " + "; ".join(
        f"{where} won {result[f'{prefix}win_rate']:.0%}, drew {result[f'{prefix}draw_rate']:.0%}, "
        f"lost {result[f'{prefix}loss_rate']:.0%}"
        for where, prefix in [("overall", ""), *((f"as {seat[3:]}", f"{seat}/") for seat in seats)]
    )
