"""Evaluate a checkpoint (or an exported `.pt2` policy): run whole episodes with the saved
preprocessing and report mean +- std return and length; optionally record an MP4 of the first.

An episode is the env's own (a whole Atari game, unclipped score), as RecordEpisodeStatistics
counts it below the wrappers: when a wrapper such as EpisodicLife ends a training episode
inside it, the env is reset and the game goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trainer.core.envs import make_env, to_env_actions
from trainer.core.errors import UserError
from trainer.core.spec import ROOT, ObsSpec
from trainer.export import load_exported, load_policy

Actor = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def evaluate(
    target: str | Path,
    episodes: int = 10,
    deterministic: bool = False,
    video_dir: str | Path | None = None,
    seed: int = 12345,
) -> dict:
    if episodes < 1:
        raise UserError(f"evaluate needs at least 1 episode, got {episodes} (--episodes N)")
    if str(target).endswith(".pt2"):
        config, module, state_dims = load_exported(target)
        deterministic = True  # an exported policy is its deterministic mode
        act = _exported_actor(module)
    else:
        loaded = load_policy(target)
        config, state_dims = loaded.config, loaded.policy.state_dims
        act = _checkpoint_actor(loaded.policy, deterministic)
    env = make_env(config.env, render_mode="rgb_array" if video_dir else None)
    obs_spec = ObsSpec.from_space(env.observation_space, config.env.id, config.policy.image_layout)
    returns, lengths, frames = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        hidden = torch.zeros([1 if d is None else d for d in state_dims])
        first = torch.ones(1, dtype=torch.bool)
        while True:
            if video_dir and episode == 0:
                frames.append(env.render())
            action, hidden = act(obs_spec.stack([obs]), hidden, first)
            step_action = to_env_actions(action.numpy(), env.action_space)[0]
            if hasattr(env.action_space, "low"):
                step_action = np.clip(step_action, env.action_space.low, env.action_space.high)
            obs, _, terminated, truncated, info = env.step(step_action)
            first = torch.zeros(1, dtype=torch.bool)
            if "episode" in info:
                returns.append(float(info["episode"]["r"]))
                lengths.append(int(info["episode"]["l"]))
                break
            if terminated or truncated:  # a wrapper ended a training episode inside the env's
                obs, _ = env.reset()
                first = torch.ones(1, dtype=torch.bool)
    env.close()
    result = {
        "episodes": episodes,
        "deterministic": deterministic,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "std_length": float(np.std(lengths)),
        "returns": returns,
    }
    if video_dir:
        result["video"] = str(_write_video(frames, Path(video_dir), env.metadata.get("render_fps", 30)))
    return result


def _checkpoint_actor(policy, deterministic: bool) -> Actor:
    @torch.inference_mode()
    def act(obs, hidden, first):
        action, _, _, hidden = policy.act(obs, hidden, first, deterministic=deterministic)
        return action, hidden

    return act


def _exported_actor(module) -> Actor:
    @torch.inference_mode()
    def act(obs, hidden, first):
        return module(obs[ROOT] if set(obs) == {ROOT} else obs, hidden, first)

    return act


def _write_video(frames: list[np.ndarray], directory: Path, fps: int) -> Path:
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise UserError("--video needs the video extra: pip install 'ray-ppo-trainer[video]'") from None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "episode_0.mp4"
    imageio.mimwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
    return path
