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

PIXELS = {"id": "tests.envs.toy:PixelSideEnv", "max_episode_steps": 10}
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


def _frame_with_nan() -> dict:
    image = np.zeros((10, 10, 1), np.float32)
    image[3, 4, 0] = np.nan
    return {"image": image, "cue": 1}


BATCH_OF_5 = np.zeros((5, 4), np.float32)
STATE_REFUSED = r": pass back the state predict returned for these observations, or None to start them fresh$"
BAD_PREDICT = [
    pytest.param(
        "mlp",
        lambda p: p.predict(np.array(["0.1", "0.2", "0.3", "0.4"])),
        r"^predict: observation 'obs' has dtype <U3; expected numbers "
        r"\(float32, as the env 'CartPole-v1' gives them\)$",
        id="strings",
    ),
    pytest.param(
        "mlp",
        lambda p: p.predict(np.zeros((0, 4), np.float32)),
        r"^predict: an empty batch, shape \(0, 4\); give one observation \(4,\) or a batch \(B, 4\) with B >= 1$",
        id="empty batch",
    ),
    pytest.param(
        "mlp",
        lambda p: p.predict(np.array([0.0, 0.1, np.nan, 0.0], np.float32)),
        r"^predict: observation 'obs' holds nan at index \(2,\); the policy cannot act on NaN or inf: "
        r"pass finite observations$",
        id="NaN",
    ),
    pytest.param(
        "mlp",
        lambda p: p.predict(np.array([[0.0] * 4, [0.0, np.inf, 0.0, 0.0]])),
        r"^predict: observation 'obs' holds inf at index \(1, 1\)",
        id="inf in a batch",
    ),
    pytest.param(
        "dict",
        lambda p: p.predict(_frame_with_nan()),
        r"^predict: observation 'image' holds nan at index \(3, 4, 0\)",
        id="NaN in a dict leaf",
    ),
    pytest.param(
        "dict",
        lambda p: p.predict({"image": np.zeros((3, 10, 10, 1), np.uint8), "cue": np.zeros(5, int)}),
        r"^predict: observation 'image' has shape \(3, 10, 10, 1\); expected \(5, 10, 10, 1\) "
        r"\(a batch of 5, as 'cue' is\), as the env 'tests.envs.toy:PixelSideEnv' gives them$",
        id="dict leaves of other batches",
    ),
    pytest.param(
        "dict",
        lambda p: p.predict({"image": np.zeros((10, 10, 1), np.uint8)}),
        r"^predict: the observation has no part 'cue' \(KeyError: 'cue'\); give observations as the env",
        id="dict key missing",
    ),
    pytest.param(
        "lstm",
        lambda p: p.predict(BATCH_OF_5, episode_start=[True, False, True]),
        r"^predict: episode_start has shape \(3,\) \(bool\); expected \(5,\) bool, "
        r"True for each observation that starts an episode$",
        id="episode_start length",
    ),
    pytest.param(
        "lstm",
        lambda p: p.predict(BATCH_OF_5, state=np.zeros((2, 1, 5, 8), np.float32)),
        r"^predict: state has shape \(2, 1, 5, 8\) \(float32\); expected \(2, 1, 5, 16\) float32 for a batch of 5"
        + STATE_REFUSED,
        id="LSTM state shape",
    ),
    pytest.param(
        "lstm",
        lambda p: p.predict(BATCH_OF_5, state=p.predict(np.zeros(4, np.float32))[1]),
        r"^predict: state has shape \(2, 1, 1, 16\) \(float32\); expected \(2, 1, 5, 16\) float32 for a batch of 5"
        + STATE_REFUSED,
        id="batch-1 state over a batch",
    ),
]


@pytest.mark.parametrize("name, call, message", BAD_PREDICT)
def test_what_predict_cannot_act_on_is_one_line_naming_the_expected_shape_or_dtype(runs, name, call, message):
    policy = trainer.load_policy(runs[name])
    with pytest.raises(UserError, match=message) as raised:
        call(policy)
    assert "\n" not in str(raised.value)


def test_a_file_is_read_as_what_it_holds_whatever_its_name(runs, tmp_path):
    checkpoint = sorted((runs["lstm"] / "checkpoints").glob("iter_*.pt"))[-1]
    renamed = tmp_path / "checkpoint.pt2"
    renamed.write_bytes(checkpoint.read_bytes())
    program = tmp_path / "program.pt"
    program.write_bytes(export_checkpoint(checkpoint, tmp_path / "policy.pt2").read_bytes())
    batch = as_batch(observations(RUNS["lstm"][0], 5))
    expected = trainer.load_policy(checkpoint).predict(batch)[0].tolist()
    as_checkpoint = trainer.load_policy(renamed)
    assert as_checkpoint.iteration == load_checkpoint(checkpoint)[1]["iteration"]
    assert as_checkpoint.predict(batch)[0].tolist() == expected
    as_program = trainer.load_policy(program)
    assert as_program.iteration is None and as_program.predict(batch)[0].tolist() == expected
