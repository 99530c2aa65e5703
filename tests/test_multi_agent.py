"""Multi-agent runs on PettingZoo envs: a shared policy over agents that finish and join at
different steps (discrete and continuous actions), separate policies for agents with different
spaces, a turn-based board game's rewards reaching the moves that earned them, padding in GAE,
inline and Ray alike, a killed worker and learner, checkpoints and exact resume."""

from __future__ import annotations

import re
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import cli, make_small_config
from tests.helpers import kill_learner_when, tensorboard_steps
from tests.test_checkpoint import flat
from tests.test_ray_runtime import iterate_killing_host
from trainer import train
from trainer.core.agents import probe_agents
from trainer.core.config import SelfPlayConfig, load_config
from trainer.core.errors import UserError
from trainer.core.messages import PolicySnapshot
from trainer.core.spec import ObsLeaf, ObsSpec, RolloutSpec
from trainer.export import export_checkpoint
from trainer.inference import load_policy
from trainer.learning.buffer import RolloutBuffer
from trainer.learning.opponent_pool import OpponentPool
from trainer.runtime.checkpoint import load_checkpoint
from trainer.runtime.inline import InlineRuntime
from trainer.runtime.ray_runtime import RayRuntime
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
    summary = train(config, run_dir=tmp_path / "run")
    logged = scalars(tmp_path / "run")
    for agent, length in (("runner_0", 5), ("runner_1", 9), ("runner_2", 13)):
        assert logged[f"agents/{agent}/episodic_return"][-1] >= 0.9 * length, logged[f"agents/{agent}/episodic_return"]
        assert summary["agents"][agent]["mean_return_last20"] >= 0.9 * length
    assert summary["policies"]["shared"]["agents"] == ["runner_0", "runner_1", "runner_2"]
    assert (
        summary["agents"]["runner_2"]["episodes"] == summary["agents"]["runner_0"]["episodes"] > 0
    )  # one an env episode
    assert max(logged["policies/shared/losses/first_minibatch_ratio_dev"]) < 1e-5
    assert "policies/shared/losses/policy" in logged and "policies/shared/normalizer/obs_std_mean" in logged


@pytest.mark.learning
def test_shared_policy_learns_continuous_actions_that_the_env_gets_within_its_bounds(tmp_path):
    """Box actions: sampled ones often fall outside [-1, 1], which the env refuses, so every
    action it gets went through the clip; the stored ones keep their sampled log-probs."""
    env = {"id": CUES["id"], "kwargs": CUES["kwargs"] | {"continuous": True}}
    config = make_small_config(
        execution="inline", env=env, ppo={"total_steps": 16384, "rollout_steps": 32, "num_minibatches": 2, "lr": 1e-3}
    )
    summary = train(config, run_dir=tmp_path / "run")
    logged = scalars(tmp_path / "run")
    for agent, length in (("runner_0", 5), ("runner_1", 9), ("runner_2", 13)):
        returns = logged[f"agents/{agent}/episodic_return"]
        assert returns[0] < 0.6 * length and summary["agents"][agent]["mean_return_last20"] >= 0.85 * length, returns
    assert max(logged["policies/shared/losses/first_minibatch_ratio_dev"]) < 1e-5


def test_separate_policies_for_agents_with_different_spaces_train_inline_and_on_ray_alike(tmp_path, local_ray):
    """Same seeds: the Ray run's workers and learner compute what the inline run does, bit for
    bit, whether one learner actor holds both policies or each has its own."""
    ends = {}
    for run, execution, own_actors in (("inline", "inline", False), ("ray", "ray", False), ("apart", "ray", True)):
        config = make_small_config(execution=execution, env=PAIR, ppo={"rollout_steps": 16, "sequence_length": 8,
                                   "num_minibatches": 2, "total_steps": 4 * 64},
                                   learner={"actor_per_policy": own_actors}, **SEPARATE)  # fmt: skip
        summary = train(config, run_dir=tmp_path / run)
        assert summary["env_steps"] == 256 and summary["iterations"] == 4
        ends[run] = load_checkpoint(tmp_path / run)[1]
    learner = ends["inline"]["runtime"]["learner"]
    speaker, listener = learner["policies"]["speaker"]["policy"], learner["policies"]["listener"]["policy"]
    assert speaker["preprocess.standardize.obs.mean"].shape == (3,)
    assert listener["preprocess.standardize.obs.mean"].shape == (4,)
    assert any("lstm" in name for name in listener) and not any("lstm" in name for name in speaker)
    assert ends["inline"]["spaces"]["policies"]["listener"]["agents"] == ["listener_0"]
    inline = flat(learner)
    for run in ("ray", "apart"):
        other = flat(ends[run]["runtime"]["learner"])
        assert inline.keys() == other.keys()
        for name, value in inline.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other[name]), (run, name)
            else:
                assert value == other[name], (run, name)
        logged = scalars(tmp_path / run)
        for tag in (
            "policies/speaker/losses/policy",
            "policies/listener/losses/value",
            "agents/listener_0/episodic_return",
        ):
            assert len(logged[tag]) == 4, (run, tag)


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


@pytest.mark.parametrize("env, limit", [(CUES | {"kwargs": {"lengths": [50, 50]}}, 7), (TICTACTOE, 3)])
def test_max_episode_steps_truncates_every_agent_left_including_those_waiting_for_their_turn(env, limit):
    """At the limit every agent still in the env ends truncated and bootstraps from what it sees;
    in tic-tac-toe after 3 turns the first player (waiting, 2 moves made) and the second (to move,
    1 made) both end, and no game can be decided yet."""
    limited = env | {"max_episode_steps": limit}
    config = make_small_config(execution="inline", env=limited, workers={"envs_per_worker": 2},
                               ppo={"rollout_steps": 32, "num_minibatches": 1})  # fmt: skip
    probe = probe_agents(config)
    worker = MultiAgentRolloutWorker(config, 0, probe)
    rollouts = worker.collect(PolicySnapshot(0, {"shared": worker.groups["shared"].policy.state_dict()}))
    data = rollouts.parts["shared"].tensors
    valid, truncated = data["valid"], data["truncated"]
    assert not data["terminated"].any()
    assert (truncated & ~valid).sum() == 0 and truncated.sum() == len(rollouts.episodes.lengths) > 0
    assert (data["bootstrap_value"][truncated] != 0).all()  # V of each agent's final observation
    if env is TICTACTOE:
        lengths = dict(zip(rollouts.episodes.agents, rollouts.episodes.lengths))
        assert lengths == {"player_1": 2, "player_2": 1}
        assert set(rollouts.episodes.returns) == {0.0} and (data["reward"][valid] == 0).all()
    else:
        assert set(rollouts.episodes.lengths) == {limit}


def test_at_the_time_limit_a_waiting_player_keeps_the_reward_of_its_last_move():
    """Counting (turn-based): a move earns its mover what it says at once. With the limit at 3
    turns the first player waits after its second move when time is up: that move's reward is
    still the env's, and must reach its sample like every other."""
    counting = {"id": "tests.envs.agents:Counting", "max_episode_steps": 3}
    config = make_small_config(execution="inline", env=counting, workers={"envs_per_worker": 1},
                               ppo={"rollout_steps": 16, "num_minibatches": 1})  # fmt: skip
    worker = MultiAgentRolloutWorker(config, 0, probe_agents(config))
    rollouts = worker.collect(PolicySnapshot(0, {"shared": worker.groups["shared"].policy.state_dict()}))
    data = rollouts.parts["shared"].tensors
    first, valid = 0, data["valid"][:, 0]
    moves = data["actions"][valid, first, 0].float()
    assert torch.equal(data["reward"][valid, first], moves)  # each move's own number, the last of each game too
    assert data["truncated"][valid, first].sum() == sum(agent == "first_0" for agent in rollouts.episodes.agents)


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


SLOW_PAIR = {"id": "tests.envs.agents:SpeakerListener", "kwargs": {"length": 8, "step_sleep_s": 0.005}}


@pytest.mark.ray
@pytest.mark.parametrize("overlap, own_actors", [(False, False), (True, False), (True, True)])
def test_learner_killed_in_a_multi_policy_run_is_rebuilt_and_every_policy_trains_every_step_once(
    local_ray, tmp_path, capsys, overlap, own_actors
):
    """With an actor per policy, one of them is killed; the other is rebuilt with it, in step."""
    run_dir = tmp_path / "run"
    config = make_small_config(execution="ray", env=SLOW_PAIR, ppo={"total_steps": 1536, "sequence_length": 8},
                               workers={"overlap": overlap}, learner={"actor_per_policy": own_actors},
                               **SEPARATE)  # fmt: skip
    killer = kill_learner_when(lambda: any(run_dir.glob("events.out.tfevents.*")), delay_s=1.0, one=own_actors)
    summary = train(config, run_dir=run_dir)
    killer.join(timeout=5)
    out = capsys.readouterr().out
    assert "the learner died (ActorDiedError" in out and summary["learner_restarts"] == 1, out
    assert summary["env_steps"] == 1536
    assert tensorboard_steps(run_dir) == list(range(64, 1537, 64))  # neither repeated nor missing
    learner = load_checkpoint(run_dir)[1]["runtime"]["learner"]
    for name in ("speaker", "listener"):
        adam_steps = {int(s["step"]) for s in learner["optimizer"][name]["state"].values()}
        assert adam_steps == {24 * 2 * 2}, name  # 24 updates x 2 epochs x 2 minibatches, each once
    assert scalars(run_dir)["perf/policy_lag"][-1] == float(overlap)


@pytest.mark.ray
def test_killed_worker_in_a_multi_policy_run_is_replaced_and_every_policy_stays_on_policy(local_ray):
    config = make_small_config(execution="ray", env={**SLOW_PAIR, "kwargs": {"length": 8, "step_sleep_s": 0.03}},
                               ppo={"sequence_length": 8}, learner={"precision": "fp32"}, **SEPARATE)  # fmt: skip
    messages: list[str] = []
    runtime = RayRuntime(config, probe_agents(config), log=messages.append)
    during, after = iterate_killing_host(runtime, 1)
    assert during.worker_restarts == after.worker_restarts == [0, 1]
    assert any("rollout worker 1 died" in m for m in messages), messages
    for stats in (during, after):
        for name in ("speaker", "listener"):
            assert stats.metrics[f"policies/{name}/losses/first_minibatch_ratio_dev"] < 1e-5


SELF_PLAY = {"opponents": ["player_2"], "pool_size": 3, "add_every": 2, "sample": "win_rate"}


def test_self_play_keeps_a_pool_of_frozen_snapshots_that_never_train_and_resumes_it_exactly(tmp_path):
    """The pool starts with the initial policy and gains a snapshot every add_every iterations,
    the oldest leaving past pool_size; a member's weights stay those of the version it was, bit
    for bit, while the policy trains on. A resume brings the pool back, results included."""
    config = make_small_config(execution="inline", env=TICTACTOE, self_play=SELF_PLAY,
                               ppo={"rollout_steps": 16, "num_minibatches": 2, "total_steps": 8 * 64},
                               checkpoint={"every": 1, "keep_last": 10})  # fmt: skip
    straight = tmp_path / "straight"
    train(config, run_dir=straight)
    states = {i: load_checkpoint(straight / f"checkpoints/iter_{i:07d}.pt")[1] for i in range(1, 9)}
    pool = states[8]["runtime"]["learner"]["opponent_pool"]
    assert [member["id"] for member in pool] == [4, 6, 8]  # 0 and 2 left past pool_size 3
    for member in pool:  # the policy as it was at that version
        then = states[member["id"]]["runtime"]["learner"]["policies"]["shared"]["policy"]
        assert all(torch.equal(then[name], member["weights"][name]) for name in then)
    now = states[8]["runtime"]["learner"]["policies"]["shared"]["policy"]
    assert not all(torch.equal(now[name], pool[0]["weights"][name]) for name in now)  # the policy moved on
    assert sum(sum(member["results"]) for member in pool) > 0
    logged = scalars(straight)
    assert logged["selfplay/pool_size"] == [1, 2, 2, 3, 3, 3, 3, 3]  # as each iteration's episodes saw it
    assert all(abs(sum(logged[f"selfplay/{r}_rate"][i] for r in ("win", "draw", "loss")) - 1) < 1e-6 for i in range(8))

    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for later in [*sorted((resumed / "checkpoints").glob("iter_*.pt"))[4:], resumed / "checkpoints/best.pt"]:
        later.unlink(missing_ok=True)
    train(resume=resumed / "checkpoints/iter_0000004.pt")
    again = load_checkpoint(resumed / "checkpoints/iter_0000008.pt")[1]["runtime"]["learner"]["opponent_pool"]
    assert [member["id"] for member in again] == [4, 6, 8]
    for before, after in zip(pool[:1], again[:1]):  # members added before the resume point: bit for bit
        assert all(torch.equal(before["weights"][name], after["weights"][name]) for name in before["weights"])


def test_self_play_trains_only_on_the_trained_side_and_swaps_seats_between_episodes():
    config = make_small_config(execution="inline", env=TICTACTOE, self_play=SELF_PLAY, workers={"envs_per_worker": 4},
                               ppo={"rollout_steps": 64, "num_minibatches": 1})  # fmt: skip
    probe = probe_agents(config)
    assert probe.groups["shared"].slots_per_env == 1  # one trained seat an env: its samples only
    worker = MultiAgentRolloutWorker(config, 0, probe)
    weights = {"shared": worker.groups["shared"].policy.state_dict()}
    opponents = {"ids": [0], "weights": {0: weights["shared"]}, "probabilities": [1.0]}
    rollouts = worker.collect(PolicySnapshot(0, weights, opponents))
    data = rollouts.parts["shared"].tensors
    assert data["valid"].shape[1] == 4 and 0.4 * 64 <= data["valid"].sum(0).float().mean() <= 0.55 * 64
    seats = {agent for agent in rollouts.episodes.agents}
    assert seats == {"player_1", "player_2"}  # the trained side played both seats
    games = len(rollouts.outcomes)
    assert games == len(rollouts.episodes.agents) > 0  # one trained agent's episode per game
    assert {member for member, _ in rollouts.outcomes} == {0}


def test_bad_self_play_settings_are_one_line_at_start():
    for self_play, message in (
        ({"opponents": ["nobody*"]}, "self_play.opponents: 'nobody*' matches no agent"),
        ({"opponents": ["player_*"]}, "self_play.opponents match every agent of policy 'shared'"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            probe_agents(make_small_config(env=TICTACTOE, self_play=self_play))
    with pytest.raises(UserError, match=re.escape("self_play.policy: no policy 'p'")):
        make_small_config(env=TICTACTOE, self_play={"policy": "p", "opponents": ["player_2"]})


@pytest.mark.parametrize("spoil", ["reward", "observation"])
def test_nan_from_an_agent_stops_the_run_naming_env_agent_worker_and_step(tmp_path, spoil):
    result = cli(
        "train", "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"), "--set", "execution=inline",
        "--set", "env.id=tests.envs.agents:CueMatch", "--set", f"env.kwargs={{spoil_at: 7, spoil: {spoil}}}",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    what = "a reward of nan" if spoil == "reward" else "a NaN or inf observation value"
    message = f"error: env 'tests.envs.agents:CueMatch' returned {what} for agent 'runner_1' (worker 0, env step "
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained on NaN was saved


def test_video_of_a_pettingzoo_env_that_cannot_render_is_refused_at_start(tmp_path):
    result = cli(
        "train", "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"),
        "--set", "env.id=tests.envs.agents:CueMatch", "--set", "eval.every=1", "--set", "eval.video_every=1",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "error: env 'tests.envs.agents:CueMatch' cannot render rgb_array frames: its constructor takes no render_mode; "
        "set eval.video_every: 0, or give it a render_mode argument with which render() returns an (H, W, 3) uint8 "
        "array\n"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_single_agent_run_directory_written_before_the_multi_agent_keys_still_resumes(tmp_path):
    run = tmp_path / "run"
    train(make_small_config(ppo={"total_steps": 128}), run_dir=run)
    written = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("policies", "policy_mapping", "self_play"):
        del written[key]
    (run / "config.yaml").write_text(yaml.safe_dump(written))
    summary = train(resume=run, overrides=["ppo.total_steps=256"])
    assert summary["iterations"] == 4


def test_self_play_run_is_evaluated_against_a_random_player_in_both_seats_during_training_and_after(tmp_path):
    config = make_small_config(execution="inline", env=TICTACTOE, self_play=SELF_PLAY,
                               ppo={"rollout_steps": 16, "num_minibatches": 2, "total_steps": 4 * 64},
                               eval={"every": 2, "episodes": 20, "opponent": "random", "video_every": 2})  # fmt: skip
    run = tmp_path / "run"
    train(config, run_dir=run)
    logged = scalars(run)
    for tag in ("eval/win_rate", "eval/as_player_1/win_rate", "eval/as_player_2/loss_rate", "eval/return_mean"):
        assert len(logged[tag]) == 2, tag
    rates = [logged[f"eval/{name}_rate"][-1] for name in ("win", "draw", "loss")]
    assert abs(sum(rates) - 1) < 1e-6
    videos = sorted((run / "videos").iterdir())  # the first of every second evaluation's games, filmed
    assert [video.name for video in videos] == ["eval_step_000000128.mp4"] and videos[0].read_bytes()[4:8] == b"ftyp"
    images = EventAccumulator(str(run), size_guidance={"images": 0})
    images.Reload()
    assert [image.step for image in images.Images("eval/video")] == [128]
    result = cli("evaluate", str(run), "--episodes", "20", "--opponent", "random", "--video", str(tmp_path / "video"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("20 episodes against random: overall won ") and "; as player_2 won" in result.stdout
    assert result.stdout.rstrip().endswith(f", video {tmp_path / 'video' / 'episode_0.mp4'}"), result.stdout
    frames = imageio.get_reader(tmp_path / "video" / "episode_0.mp4").count_frames()
    assert 6 <= frames <= 10  # the board after the reset and after each of a game's 5 to 9 moves
    itself = cli("evaluate", str(run), "--episodes", "6", "--opponent", f"{run}:shared")  # a checkpoint's policy
    assert itself.returncode == 0 and itself.stdout.startswith(f"6 episodes against {run}:shared: "), itself.stderr


def test_load_policy_of_a_multi_policy_run_names_the_policy_and_predicts_with_its_spaces(tmp_path):
    config = make_small_config(execution="inline", env=PAIR, ppo={"rollout_steps": 16, "sequence_length": 8,
                               "total_steps": 64}, **SEPARATE)  # fmt: skip
    train(config, run_dir=tmp_path / "run")
    with pytest.raises(UserError, match=r"holds the policies speaker, listener of a multi-agent run; name one"):
        load_policy(tmp_path / "run")
    listener = load_policy(tmp_path / "run", policy="listener")
    assert listener.recurrent and listener.observation_space.shape == (4,)
    action, state = listener.predict(np.array([0, 1, 0, 1], dtype=np.float32))
    assert 0 <= int(action) < 3 and state is not None
    speaker = load_policy(tmp_path / "run", policy="speaker")
    assert not speaker.recurrent and speaker.predict(np.eye(3, dtype=np.float32))[0].shape == (3,)
    program = export_checkpoint(tmp_path / "run", tmp_path / "listener.pt2", policy="listener")
    exported = load_policy(program)
    assert exported.name == "listener" and exported.observation_space.shape == (4,)
    observations = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    assert np.array_equal(exported.predict(observations)[0], listener.predict(observations)[0])
    every_agent = cli("evaluate", str(tmp_path / "run"), "--episodes", "4")  # each agent with its own policy
    assert every_agent.returncode == 0, every_agent.stderr
    assert every_agent.stdout.startswith("4 episodes: mean return per agent speaker_0 "), every_agent.stdout


@pytest.mark.parametrize(
    "name, policies, agents",
    [
        ("tictactoe_selfplay", {"shared": 1}, ["player_1", "player_2"]),  # one trained seat an env
        ("speaker_listener", {"speaker": 1, "listener": 1}, ["speaker_0", "listener_0"]),
        ("pursuit", {"shared": 8}, [f"pursuer_{i}" for i in range(8)]),
    ],
)
def test_shipped_multi_agent_configs_find_their_agents_and_policies(repo_root, name, policies, agents):
    probe = probe_agents(load_config(repo_root / f"configs/{name}.yaml"))
    assert list(probe.agents) == agents
    assert {group: probe.groups[group].slots_per_env for group in probe.groups} == policies


@pytest.mark.ray
def test_two_data_parallel_learners_train_every_policy_as_one_learner_does(local_ray, tmp_path):
    runs, counted = {}, {}
    for count in (1, 2):
        config = make_small_config(execution="ray", env=PAIR, learner={"num_learners": count, "precision": "fp32"},
                                   ppo={"total_steps": 3 * 64, "sequence_length": 8}, **SEPARATE)  # fmt: skip
        train(config, run_dir=tmp_path / str(count))
        runs[count] = load_checkpoint(tmp_path / str(count))[1]["runtime"]["learner"]["policies"]
        counted[count] = {tag: values for tag, values in scalars(tmp_path / str(count)).items() if "agent_steps" in tag}
    assert counted[1] == counted[2] and len(counted[1]) == 2  # each policy's agent steps, summed over the ranks
    for name in ("speaker", "listener"):
        one, two = runs[1][name]["policy"], runs[2][name]["policy"]
        assert max((one[key] - two[key]).abs().max().item() for key in one) < 1e-5, name
        stats_one, stats_two = flat(runs[1][name]["obs_rms"]), flat(runs[2][name]["obs_rms"])
        assert all(torch.equal(torch.as_tensor(stats_one[k]), torch.as_tensor(stats_two[k])) for k in stats_one)


@pytest.mark.parametrize("keep_initial, ids", [(False, [4, 6, 8]), (True, [0, 6, 8])])
def test_pool_drops_its_oldest_snapshot_or_keeps_the_initial_one(keep_initial, ids):
    pool = OpponentPool(SelfPlayConfig(opponents=["b"], pool_size=3, keep_initial=keep_initial, sample="win_rate"))
    for version in range(0, 10, 2):
        pool.add(version, {"w": torch.full((2,), float(version))})
    assert [member["id"] for member in pool.members] == ids
    pool.record([(ids[0], 1.0)] * 8 + [(ids[1], -1.0)] * 8)  # beaten often, and beating the policy often
    first, second, third = pool.probabilities()
    assert second > third > first and abs(first + second + third - 1) < 1e-9
