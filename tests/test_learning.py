"""Learning tests (marked `learning`, ~2 min in all): the shipped configs solve their tasks in
process, and a memoryless MLP does not solve masked-velocity CartPole (so the LSTM test means
something); an image task through the CNN, a Dict task needing both its keys, and FrozenLake
through the one-hot of its Discrete observation solve within the budgets measured for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, make_small_config
from trainer import train
from trainer.core.config import load_config
from trainer.runtime.training_session import planned_steps

pytestmark = pytest.mark.learning

SUMMARY_KEYS = {
    "env_steps",
    "iterations",
    "wall_time_s",
    "steps_per_s",
    "mean_return_last20",
    "best_mean_return",
    "solved_at_step",
}


def run(tmp_path: Path, config: str, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    path, settings = REPO_ROOT / "configs" / config, ["execution=inline", "seed=1", *overrides]
    summary = train(path, settings, run_dir=run_dir)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= on_disk.keys()
    assert on_disk == summary
    resolved = load_config(path, settings)
    assert summary["env_steps"] == planned_steps(resolved)
    assert summary["iterations"] == planned_steps(resolved) // resolved.steps_per_iteration
    return summary


def solved(threshold: float):
    """A callback that stops the run once the last 20 episodes' mean return reaches `threshold`."""

    def stop_when_solved(report) -> bool:
        return report.scalars.get("charts/mean_return_last20", float("-inf")) >= threshold

    return stop_when_solved


def test_cartpole_mlp_solves(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs/cartpole.yaml", ["execution=inline", "seed=1"])
    summary = train(config, run_dir=tmp_path / "run", callbacks=[solved(475)])  # solves at ~20-25k of 100k
    assert summary["solved_at_step"] is not None and summary["interrupted_by"] == "callback stop_when_solved"
    assert summary["mean_return_last20"] >= 475


def test_masked_cartpole_lstm_solves(tmp_path: Path) -> None:
    overrides = ["execution=inline", "ppo.total_steps=150000"]
    config = load_config(REPO_ROOT / "configs/cartpole_masked_lstm.yaml", overrides)
    summary = train(config, run_dir=tmp_path / "run", callbacks=[solved(475)])  # solves at ~55-70k
    assert summary["solved_at_step"] is not None and summary["interrupted_by"] == "callback stop_when_solved"
    assert summary["best_mean_return"] >= 475 and summary["env_steps"] < 150_000


def test_masked_cartpole_mlp_cannot_remember(tmp_path: Path) -> None:
    # 60k steps: about where the LSTM of the same config solves it (~55-70k)
    summary = run(tmp_path, "cartpole_masked_lstm.yaml", "policy.kind=mlp", "ppo.total_steps=60000")  # ~65
    assert summary["solved_at_step"] is None
    assert summary["best_mean_return"] < 150


def learn_small(tmp_path: Path, env: dict, total_steps: int, callbacks=(), **extra) -> dict:
    """A small in-process run on a test env, two workers of four envs, 64-step rollouts."""
    config = make_small_config(
        env=env,
        policy={"hidden_sizes": [64], **extra.get("policy", {})},
        ppo={"total_steps": total_steps, "rollout_steps": 64, "num_minibatches": 4, "update_epochs": 4, "lr": 1e-3},
        workers={"num_workers": 2, "envs_per_worker": 4},
        logging={"tensorboard": False},
        checkpoint={"every": 0},
    )
    return train(config, run_dir=tmp_path / "run", callbacks=callbacks)


PIXELS = {"id": "tests.envs.toy:PixelSideEnv", "max_episode_steps": 10, "reward_threshold": 9.0}
CUE_BUDGET = 30_720  # solved at 15,872 (seed 3)
FROZEN_BUDGET = 15_360  # solved at 7,680 (seed 3)


def test_cnn_solves_an_image_task(tmp_path: Path) -> None:
    """PixelSideEnv: the side of a bright square in a uint8 frame says the action; a wrong one ends
    the episode, so a policy blind to the frame scores ~1 of 10. Solved at ~3k steps (seed 3)."""
    summary = learn_small(tmp_path, PIXELS, 15_360)
    assert summary["solved_at_step"] is not None and summary["mean_return_last20"] >= 9.0


def test_dict_observation_needs_both_keys_and_solves(tmp_path: Path) -> None:
    """The Dict variant: the right one of 4 actions is 2 * side + cue, so image and cue are both needed."""
    summary = learn_small(tmp_path, {**PIXELS, "kwargs": {"cue": True}}, CUE_BUDGET, callbacks=[solved(9.0)])
    assert summary["solved_at_step"] is not None and summary["mean_return_last20"] >= 9.0


def test_frozenlake_solves_through_the_discrete_observation(tmp_path: Path) -> None:
    """FrozenLake 4x4 (not slippery): the state index one-hot is the whole observation."""
    env = {"id": "FrozenLake-v1", "kwargs": {"is_slippery": False}, "reward_threshold": 0.95}
    summary = learn_small(tmp_path, env, FROZEN_BUDGET)
    assert summary["solved_at_step"] is not None
