"""Evaluate a checkpoint (or an exported `.pt2` policy): run episodes with the saved normalizer
stats and report mean +- std return and length; optionally record an MP4 of the first episode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer.core.config import load_config
from trainer.core.envs import make_env, to_env_actions
from trainer.core.errors import UserError
from trainer.export import InferencePolicy, load_exported, policy_from_checkpoint
from trainer.runtime.checkpoint import load_checkpoint


def evaluate(
    target: str | Path,
    episodes: int = 10,
    deterministic: bool = False,
    video_dir: str | Path | None = None,
    seed: int = 12345,
) -> dict:
    if str(target).endswith(".pt2"):
        config, act, (layers, size) = load_exported(target)
        deterministic = True  # an exported policy is its deterministic mode
        act_fn = _exported_actor(act)
    else:
        _, state = load_checkpoint(target)
        probe = make_env(_config_of(state).env)
        config, policy, obs_rms = policy_from_checkpoint(state, probe.observation_space, probe.action_space)
        probe.close()
        layers, size = policy.state_shape
        act_fn = _checkpoint_actor(
            policy, obs_rms if config.ppo.normalize_obs else None, config.ppo.obs_clip, deterministic
        )
    env = make_env(config.env, render_mode="rgb_array" if video_dir else None)
    returns, lengths, frames = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        hidden = torch.zeros(2, layers, 1, size)
        first = torch.ones(1, dtype=torch.bool)
        total, length, done = 0.0, 0, False
        while not done:
            if video_dir and episode == 0:
                frames.append(env.render())
            action, hidden = act_fn(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), hidden, first)
            step_action = to_env_actions(action.numpy(), env.action_space)[0]
            if hasattr(env.action_space, "low"):
                step_action = np.clip(step_action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(step_action)
            first = torch.zeros(1, dtype=torch.bool)
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
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


def _config_of(state: dict):
    return load_config(state["config"])


def _checkpoint_actor(policy, obs_rms, clip: float, deterministic: bool):
    module = InferencePolicy(policy, obs_rms, clip)

    @torch.inference_mode()
    def act(obs, hidden, first):
        if deterministic:
            return module(obs, hidden, first)
        action, _, _, hidden = policy.act(module.normalize_obs(obs), hidden, first)
        return action, hidden

    return act


def _exported_actor(module):
    @torch.inference_mode()
    def act(obs, hidden, first):
        return module(obs, hidden, first)

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
