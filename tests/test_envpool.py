"""`workers.vector_env: envpool`: EnvPool's Atari against gymnasium's, the shipped config's
mapping, and the contract every vector env keeps (same-step resets, whole-game raw scores)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from trainer.core.acting import finished_episodes
from trainer.core.config import EnvConfig, load_config
from trainer.core.envpool_envs import EnvPoolConfigError, EnvPoolVectorEnv, envpool_task
from trainer.core.envs import make_vector_env

pytest.importorskip("envpool")
pytest.importorskip("ale_py")

BREAKOUT = {"id": "ALE/Breakout-v5", "kwargs": {"frameskip": 1, "repeat_action_probability": 0.0}}


def test_envpool_breakout_gives_gymnasiums_frames_and_raw_scores_over_a_scripted_episode() -> None:
    """The same frames at every step and the same whole-game scores, ended at the same step
    (one no-op frame at reset on both sides: EnvPool takes at least one)."""
    wrappers = [
        {"name": "AtariPreprocessing", "kwargs": {"noop_max": 1, "frame_skip": 4, "screen_size": 84}},
        {"name": "FrameStackObservation", "kwargs": {"stack_size": 4}},
    ]
    config = EnvConfig(**BREAKOUT, wrappers=wrappers)
    pool, reference = EnvPoolVectorEnv(config, 2), make_vector_env(config, 2)
    assert (pool.single_observation_space, pool.single_action_space) == (
        reference.single_observation_space,
        reference.single_action_space,
    )
    obs, _ = pool.reset(seed=0)
    expected, _ = reference.reset(seed=0)
    assert obs.shape == expected.shape == (2, 4, 84, 84) and obs.dtype == expected.dtype == np.uint8
    np.testing.assert_array_equal(obs, expected)
    actions = np.random.default_rng(1).integers(0, 4, (600, 2))
    ended, ended_reference = [], []
    for t, action in enumerate(actions):
        obs, reward, terminated, _, info = pool.step(action)
        expected, expected_reward, expected_terminated, _, expected_info = reference.step(action)
        np.testing.assert_array_equal(obs, expected, err_msg=f"step {t}")
        np.testing.assert_array_equal(reward, expected_reward)
        np.testing.assert_array_equal(terminated, expected_terminated)
        ended += [(t, i, score) for i, score, _ in finished_episodes(info)]
        ended_reference += [(t, i, score) for i, score, _ in finished_episodes(expected_info)]
    assert len(ended) >= 4 and sum(score for *_, score in ended) > 0
    assert ended == ended_reference
    pool.close()
    reference.close()


def test_the_shipped_breakout_config_maps_onto_envpools_options() -> None:
    task = envpool_task(load_config(REPO_ROOT / "configs/atari_breakout.yaml").env)
    assert task.task_id == "Breakout-v5" and task.frames_per_step == 4 and not task.unstacked
    assert task.options == {
        "repeat_action_probability": 0.0,
        "full_action_space": False,
        "noop_max": 30,
        "use_fire_reset": True,
        "episodic_life": True,
        "reward_clip": True,
        "stack_num": 4,
        "img_height": 84,
        "img_width": 84,
        "frame_skip": 4,
        "max_episode_steps": 27_000,  # ALE v5's 108,000 frames
    }


def test_envpool_resets_in_the_same_step_and_reports_whole_games_in_raw_score() -> None:
    """With episodic life a lost life ends the training episode (the final frame in
    info["final_obs"], the next one already the restart), and a game is reported once, at its
    end, in unclipped points over all its lives, its length in frames."""
    config = load_config(REPO_ROOT / "configs/atari_breakout.yaml").env
    envs = EnvPoolVectorEnv(config, 2)
    envs.reset(seed=3)
    rng = np.random.default_rng(0)
    lives_lost, finished, clipped = 0, [], np.zeros(2)
    while len(finished) < 4:
        obs, reward, terminated, truncated, info = envs.step(rng.integers(0, 4, 2))
        clipped += reward
        assert set(np.unique(reward)) <= {0.0, 1.0}
        for i in np.flatnonzero(terminated | truncated):
            assert info["final_obs"][i].shape == (4, 84, 84)
            assert not np.array_equal(info["final_obs"][i], obs[i])
        lives_lost += int(terminated.sum())
        for i, score, length in finished_episodes(info):
            finished.append((score, length))
            assert score >= clipped[i]  # raw points: Breakout's higher rows give 4 and 7
            clipped[i] = 0.0
    assert lives_lost >= 4 * len(finished)  # five lives a game
    assert all(length % 4 == 0 and length > 100 for _, length in finished)
    envs.close()


def test_envpool_is_reproducible_from_the_reset_seed() -> None:
    config = load_config(REPO_ROOT / "configs/atari_breakout.yaml").env
    envs = EnvPoolVectorEnv(config, 2)
    actions = np.random.default_rng(0).integers(0, 4, (50, 2))

    def frames(seed: int) -> np.ndarray:
        first, _ = envs.reset(seed=seed)
        return np.stack([first, *(envs.step(action)[0] for action in actions)])

    first = frames(7)
    np.testing.assert_array_equal(frames(7), first)
    assert not np.array_equal(frames(8), first)  # 30 no-op starts, drawn from the seed
    envs.close()


def test_an_lstm_config_without_a_frame_stack_gets_single_frames() -> None:
    config = load_config(REPO_ROOT / "configs/atari_breakout_lstm.yaml").env
    envs, reference = EnvPoolVectorEnv(config, 2), make_vector_env(config, 1)
    assert envs.single_observation_space == reference.single_observation_space
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 84, 84)
    envs.close()
    reference.close()


def test_without_envpool_installed_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "envpool", None)  # what a failed import leaves
    with pytest.raises(EnvPoolConfigError, match=r"needs envpool, which is not installed .*ray-ppo-trainer\[atari\]"):
        envpool_task(EnvConfig(id="CartPole-v1"))


def test_a_classic_control_id_runs_with_gymnasiums_spaces_and_episode_returns() -> None:
    """CartPole-v1 through EnvPool: gymnasium's spaces, and each finished episode's return equal
    to its length (one point a step), counted in steps."""
    config = EnvConfig(id="CartPole-v1")
    envs, reference = EnvPoolVectorEnv(config, 4), make_vector_env(config, 1)
    assert (envs.single_observation_space, envs.single_action_space) == (
        reference.single_observation_space,
        reference.single_action_space,
    )
    envs.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, (300, 4))
    finished = []
    for action in actions:
        obs, _, terminated, truncated, info = envs.step(action)
        for i in np.flatnonzero(terminated | truncated):
            assert not np.array_equal(info["final_obs"][i], obs[i])  # already the next episode's start
        finished += finished_episodes(info)
    assert len(finished) >= 20
    assert all(score == length and 8 <= length <= 500 for _, score, length in finished)
    envs.close()
    reference.close()
