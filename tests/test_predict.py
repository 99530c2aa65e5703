"""`trainer.load_policy(...).predict` on numpy observations: one or a batch, vector, image and
dict observations, an LSTM's state carried by the caller, exported programs, and checkpoints
whose config named a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import trainer
from tests.conftest import make_small_config
from trainer.core.config import EnvConfig
from trainer.core.env_making import make_env
from trainer.core.errors import UserError
from trainer.evaluate import evaluate
from trainer.export import export_checkpoint
from trainer.runtime.checkpoint import load_checkpoint

PIXELS = {"id": "tests.envs_for_tests:PixelSideEnv", "max_episode_steps": 10}
RUNS = {
    "mlp": ({"id": "CartPole-v1"}, "mlp"),
    "lstm": ({"id": "CartPole-v1"}, "lstm"),
    "image": (PIXELS, "mlp"),
    "dict": ({**PIXELS, "kwargs": {"cue": True}}, "lstm"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    for name, (env, kind) in RUNS.items():
        config = make_small_config(
            env=env, policy={"kind": kind}, ppo={"total_steps": 512}, logging={"tensorboard": False}
        )
        trainer.train(config, run_dir=root / name)
    return {name: root / name for name in RUNS}


def observations(env: dict, count: int, seed: int = 0) -> list:
    env = make_env(EnvConfig(**env))
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    while len(seen) < count:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        seen.append(env.reset()[0] if terminated or truncated else obs)
    return seen


def as_batch(items: list):
    """Single observations -> the batch a vector env gives (a dict of arrays for Dict spaces)."""
    if isinstance(items[0], dict):
        return {key: np.stack([o[key] for o in items]) for key in items[0]}
    return np.stack(items)


@pytest.mark.parametrize("name", ["mlp", "image", "dict"])
def test_a_batch_predicts_what_each_observation_predicts_alone(runs, name):
    policy = trainer.load_policy(runs[name])
    singles = observations(RUNS[name][0], 6)
    alone = [policy.predict(obs)[0] for obs in singles]
    together, state = policy.predict(as_batch(singles))
    assert together.shape == (6,) and [int(a) for a in together] == [int(a) for a in alone]
    assert all(policy.action_space.contains(action) for action in alone)
    assert policy.observation_space.contains(singles[0])
    if RUNS[name][1] == "lstm":
        assert state.shape == (2, 1, 6, 16)
    else:
        assert state is None


def test_lstm_state_carried_by_the_caller_plays_the_episode_evaluation_plays(runs):
    policy = trainer.load_policy(runs["lstm"])
    env = make_env(policy.config.env)  # what evaluation runs, one env reset with the same seed
    obs, _ = env.reset(seed=7)
    state, total, done, starts = None, 0.0, False, [True]
    memoryless_differs = False
    while not done:
        action, next_state = policy.predict(obs, state, episode_start=starts)
        memoryless_differs |= state is not None and policy.predict(obs)[0] != action
        obs, reward, terminated, truncated, _ = env.step(action)
        state, total, done, starts = next_state, total + reward, terminated or truncated, [False]
    assert evaluate(runs["lstm"], episodes=1, deterministic=True, seed=7)["returns"] == [total]
    assert memoryless_differs  # the carried state changes actions, so it is really used


def test_an_exported_program_predicts_what_its_checkpoint_predicts(runs, tmp_path):
    program = trainer.load_policy(export_checkpoint(runs["dict"], tmp_path / "policy.pt2"))
    checkpoint = trainer.load_policy(runs["dict"])
    batch = as_batch(observations(RUNS["dict"][0], 5))
    from_program, program_state = program.predict(batch)
    from_checkpoint, checkpoint_state = checkpoint.predict(batch)
    assert from_program.tolist() == from_checkpoint.tolist()
    np.testing.assert_allclose(program_state, checkpoint_state, atol=1e-5)
    with pytest.raises(UserError, match=r"^an exported \.pt2 policy only takes its most likely action"):
        program.predict(batch, deterministic=False)


def test_sampled_actions_follow_the_seed(runs):
    batch = as_batch(observations(RUNS["mlp"][0], 32))
    first = trainer.load_policy(runs["mlp"], seed=3).predict(batch, deterministic=False)[0]
    again = trainer.load_policy(runs["mlp"], seed=3).predict(batch, deterministic=False)[0]
    assert first.tolist() == again.tolist()


def test_a_checkpoint_whose_config_named_a_gpu_loads_on_this_cpu(runs, tmp_path):
    _, state = load_checkpoint(runs["mlp"])
    state["config"]["learner"] |= {"device": "cuda:0", "num_gpus": 1.0}
    moved = tmp_path / "gpu_run.pt"
    torch.save(state, moved)
    action, _ = trainer.load_policy(moved).predict(observations(RUNS["mlp"][0], 1)[0])
    assert action in (0, 1)


def test_an_observation_of_the_wrong_shape_is_one_line(runs):
    policy = trainer.load_policy(runs["mlp"])
    with pytest.raises(
        UserError, match=r"^predict: observation 'obs' has shape \(3,\); expected \(4,\) \(one\) or \(B, 4\)"
    ):
        policy.predict(np.zeros(3, dtype=np.float32))
