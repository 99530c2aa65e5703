"""Multi-agent runs on PettingZoo envs: a shared policy over agents that finish and join at
different steps, separate policies for agents with different spaces, a turn-based board game's
rewards reaching the moves that earned them, padding in GAE, inline and Ray alike, a killed
worker and learner, checkpoints and exact resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import make_small_config
from tests.test_checkpoint import flat
from trainer import train
from trainer.core.agents import probe_agents
from trainer.core.messages import PolicySnapshot
from trainer.core.spec import ObsLeaf, ObsSpec, RolloutSpec
from trainer.learning.buffer import RolloutBuffer
from trainer.runtime.checkpoint import load_checkpoint
from trainer.runtime.inline import InlineRuntime
from workers.multi_agent_worker import MultiAgentRolloutWorker

CUES = {"id": "tests.envs.agents:CueMatch", "kwargs": {"num_agents": 3, "lengths": [5, 9, 13], "join_at": [0, 0, 3]}}
PAIR = {"id": "tests.envs.agents:SpeakerListener", "kwargs": {"length": 8}}
SEPARATE = {
    "policies": {"speaker": {}, "listener": {"kind": "lstm", "lstm_hidden_size": 16, "ppo": {"lr": 1e-3}}},
    "policy_mapping": {"speaker*": "speaker", "listener*": "listener"},
}
TICTACTOE = {"id": "pettingzoo.classic.tictactoe_v3:env"}


def scalars(run_dir) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.learning
def test_shared_policy_learns_every_agents_task_when_agents_finish_and_join_at_different_steps(tmp_path):
    config = make_small_config(
        execution="inline", env=CUES, ppo={"total_steps": 16384, "rollout_steps": 32, "num_minibatches": 2, "lr": 1e-3}
    )
    train(config, run_dir=tmp_path / "run")
    logged = scalars(tmp_path / "run")
    for agent, length in (("runner_0", 5), ("runner_1", 9), ("runner_2", 13)):
        assert logged[f"agents/{agent}/episodic_return"][-1] >= 0.9 * length, (
            agent,
            logged[f"agents/{agent}/episodic_return"],
        )
    assert max(logged["policies/shared/losses/first_minibatch_ratio_dev"]) < 1e-5
    assert "policies/shared/losses/policy" in logged and "policies/shared/normalizer/obs_std_mean" in logged


def test_separate_policies_for_agents_with_different_spaces_train_inline_and_on_ray_alike(tmp_path, local_ray):
    """Same seeds: the Ray run's workers and learner actor compute what the inline run does, bit for bit."""
    ends = {}
    for execution in ("inline", "ray"):
        config = make_small_config(execution=execution, env=PAIR, ppo={"rollout_steps": 16, "sequence_length": 8,
                                   "num_minibatches": 2, "total_steps": 4 * 64}, **SEPARATE)  # fmt: skip
        summary = train(config, run_dir=tmp_path / execution)
        assert summary["env_steps"] == 256 and summary["iterations"] == 4
        ends[execution] = load_checkpoint(tmp_path / execution)[1]
    learner = ends["inline"]["runtime"]["learner"]
    speaker, listener = learner["policies"]["speaker"]["policy"], learner["policies"]["listener"]["policy"]
    assert speaker["preprocess.standardize.obs.mean"].shape == (3,)
    assert listener["preprocess.standardize.obs.mean"].shape == (4,)
    assert any("lstm" in name for name in listener) and not any("lstm" in name for name in speaker)
    assert ends["inline"]["spaces"]["policies"]["listener"]["agents"] == ["listener_0"]
    inline, ray_run = flat(learner), flat(ends["ray"]["runtime"]["learner"])
    assert inline.keys() == ray_run.keys()
    for name, value in inline.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, ray_run[name]), name
    logged = scalars(tmp_path / "ray")
    for tag in (
        "policies/speaker/losses/policy",
        "policies/listener/losses/value",
        "agents/listener_0/episodic_return",
    ):
        assert len(logged[tag]) == 4, tag


def test_turn_based_game_rewards_reach_the_moves_that_earned_them():
    """Tic-tac-toe: each player's samples are its own moves, packed; its last move of a game
    carries the game's result (+1, -1 or 0) and ends its episode, every other move earns 0."""
    config = make_small_config(execution="inline", env=TICTACTOE, workers={"envs_per_worker": 4},
                               ppo={"rollout_steps": 64, "num_minibatches": 1})  # fmt: skip
    probe = probe_agents(config)
    assert probe.turn_based and probe.groups["shared"].probe.obs_spec.mask_key == "action_mask"
    worker = MultiAgentRolloutWorker(config, 0, probe)
    learner_weights = {"shared": worker.groups["shared"].policy.state_dict()}
    rollouts = worker.collect(PolicySnapshot(0, learner_weights))
    data = rollouts.parts["shared"].tensors
    valid, reward, terminated = data["valid"], data["reward"], data["terminated"]
    counts = valid.sum(0)
    for slot in range(valid.shape[1]):  # packed: valid samples first, then padding
        assert valid[: counts[slot], slot].all() and not valid[counts[slot] :, slot].any()
    assert 0.4 * 64 <= counts.float().mean() <= 0.55 * 64  # each player moves at every other step
    ends = terminated & valid
    assert ends.sum() == len(rollouts.episodes.returns) > 0
    assert set(reward[ends].tolist()) <= {-1.0, 0.0, 1.0} and (reward[valid & ~ends] == 0).all()
    assert sorted(rollouts.episodes.returns) == sorted(reward[ends].tolist())
    first_of_game = data["first"] & valid
    assert (first_of_game.sum(0) >= ends.sum(0)).all()  # a game's first move comes before its last


def test_gae_over_padded_samples_equals_gae_over_the_valid_samples_alone():
    T, gamma, lam = 8, 0.9, 0.8
    spec = RolloutSpec.build(ObsSpec((ObsLeaf("obs", "vector", (1,), torch.float32),)), action_dim=1,
                             action_dtype=torch.long, state_dims=(2, 0, None, 0), rollout_steps=T,
                             sequence_length=1, valid=True)  # fmt: skip
    padded = RolloutBuffer(spec, num_envs=1, envs_per_worker=1, device=torch.device("cpu"))
    compact = RolloutBuffer(spec, num_envs=1, envs_per_worker=1, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    valid = torch.tensor([True, False, True, True, False, False, True, False])
    n = int(valid.sum())
    reward, value = (
        torch.tensor(rng.normal(size=n), dtype=torch.float32),
        torch.tensor(rng.normal(size=n), dtype=torch.float32),
    )
    terminated = torch.tensor([False, True, False, False])
    for buffer, rows in ((padded, valid.nonzero()[:, 0]), (compact, torch.arange(n))):
        buffer.valid[rows, 0] = True
        buffer.reward[rows, 0], buffer.value[rows, 0], buffer.terminated[rows, 0] = reward, value, terminated
        buffer.last_value[0] = 0.5
        buffer.compute_advantages(gamma, lam)
    assert torch.allclose(padded.advantage[valid, 0], compact.advantage[:n, 0])
    assert (padded.advantage[~valid, 0] == 0).all()


def test_resume_of_a_multi_policy_run_is_bitwise_the_straight_run(tmp_path):
    """Episodes end at iteration boundaries and repeat whatever the seed, so a resume can only
    lose the trainer's own state: every policy's parameters, normalizers and Adam moments come
    back bit for bit."""
    env = {"id": "tests.envs.agents:CueMatch", "kwargs": {"num_agents": 2, "lengths": [8, 16], "fixed": True}}
    config = make_small_config(execution="inline", env=env, ppo={"rollout_steps": 16, "num_minibatches": 2,
                               "total_steps": 8 * 64}, checkpoint={"every": 4, "keep_last": 5},
                               policies={"a": {}, "b": {"hidden_sizes": [32]}},
                               policy_mapping={"runner_0": "a", "runner_1": "b"})  # fmt: skip
    straight = tmp_path / "straight"
    train(config, run_dir=straight)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for later in [resumed / "checkpoints/iter_0000008.pt", resumed / "checkpoints/best.pt"]:
        later.unlink(missing_ok=True)
    summary = train(resume=resumed / "checkpoints/iter_0000004.pt")
    assert summary["iterations"] == 8
    a = flat(load_checkpoint(straight / "checkpoints/iter_0000008.pt")[1]["runtime"]["learner"])
    b = flat(load_checkpoint(resumed / "checkpoints/iter_0000008.pt")[1]["runtime"]["learner"])
    assert a.keys() == b.keys() and any(".optimizer." in k or k.startswith("optimizer.") for k in a)
    for name, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[name]), name
        else:
            assert value == b[name], name


def test_inline_runtime_iterates_a_turn_based_game_with_masks_on_policy():
    config = make_small_config(execution="inline", env=TICTACTOE, ppo={"rollout_steps": 32, "num_minibatches": 2})
    runtime = InlineRuntime(config, probe_agents(config))
    try:
        for _ in range(3):
            stats = runtime.iterate()
            assert stats.metrics["losses/first_minibatch_ratio_dev"] < 1e-5
            assert 0 < stats.metrics["policies/shared/charts/agent_steps"] <= 32 * 2 * 2 * 2
    finally:
        runtime.close()
