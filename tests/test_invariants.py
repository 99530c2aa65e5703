"""End-to-end invariants of one iteration (numbered as in the README): the first-minibatch PPO
ratio is 1 (invariant 5), rollouts of another policy version are refused (invariant 6), as are
non-finite and misshapen ones, and truncated steps bootstrap from the final observation's value
with the env's own LSTM state while terminated ones do not (invariant 7)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from trainer.core.errors import UserError
from trainer.core.messages import StaleRolloutError

TOY_ENV = "tests.envs.toy:StepCounterEnv"
PIXEL_ENV = "tests.envs.toy:PixelSideEnv"


RATIO_ENVS = {
    "cartpole": ("CartPole-v1", {}, 15),
    "masked-cartpole": ("MaskedVelocityCartPole-v1", {}, 15),
    "toy-discrete": (TOY_ENV, {"action_space": "discrete"}, 5),
    "toy-multidiscrete": (TOY_ENV, {"action_space": "multidiscrete"}, 5),
    "toy-box": (TOY_ENV, {"action_space": "box"}, 5),
    "cnn": (PIXEL_ENV, {}, 5),  # uint8 image -> small CNN
    "dict": (PIXEL_ENV, {"cue": True}, 5),  # image + Discrete cue
    "discrete-obs": ("FrozenLake-v1", {"is_slippery": True}, 6),  # one-hot observation
}


GRU = "tests.envs.networks:GRUCore"  # the example custom networks of docs/networks.md
CUSTOM = {"gru": (GRU, "auto"), "gru+encoder": (GRU, "tests.envs.networks:SumEncoder"),
          "residual": ("tests.envs.networks:ResidualMLPCore", "auto")}  # fmt: skip
RATIO_CASES = (
    [(env, kind, 1) for kind in ("mlp", "lstm") for env in RATIO_ENVS]
    + [("toy-multidiscrete", "lstm", 2)]
    + [("masked-cartpole", "gru", 1), ("dict", "gru+encoder", 1), ("toy-box", "residual", 1)]
)


@pytest.mark.parametrize("env, kind, layers", RATIO_CASES, ids=[f"{k}{n}-{e}" for e, k, n in RATIO_CASES])
def test_first_minibatch_ratio_is_one(small_config, inline_runtime, env: str, kind: str, layers: int) -> None:
    """Invariant 5: worker and learner agree on normalization, log-probs, recurrent states and
    resets, over several iterations whose sequences hold terminations, truncations and episode
    starts; custom networks included. An fp32 learner: bf16 rounds its features by design."""
    env_id, kwargs, time_limit = RATIO_ENVS[env]
    core, encoder = CUSTOM.get(kind, (kind, "auto"))
    config = small_config(
        env={"id": env_id, "kwargs": kwargs, "max_episode_steps": time_limit},
        policy={"kind": core, "encoder": encoder, "lstm_layers": layers},
        ppo={"rollout_steps": 32, "sequence_length": 8, "num_minibatches": 4, "normalize_obs": True},
        workers={"num_workers": 2, "envs_per_worker": 3},
        learner={"precision": "fp32"},  # exact agreement; a bf16 learner's features round (test_precision.py)
    )
    runtime = inline_runtime(config)
    buffer = runtime.learner.buffer
    terminations = truncations = starts_inside = 0
    for iteration in range(4):
        metrics = runtime.iterate().metrics
        deviation = metrics["losses/first_minibatch_ratio_dev"]
        assert deviation < 1e-5, f"iteration {iteration}: max |ratio - 1| = {deviation}"
        terminations += int(buffer.terminated.sum())
        truncations += int(buffer.truncated.sum())
        first = buffer.first.view(buffer.C, buffer.K, buffer.N)
        starts_inside += int(first[:, 1:].sum())
    if runtime.learner.obs_rms:  # vector leaves: normalization was live from iteration 2 on
        assert all(rms.count > 0 for rms in runtime.learner.obs_rms.values())
    assert terminations > 0 and truncations > 0
    if config.policy.recurrent:
        assert starts_inside > 0


def collect_one(small_config, inline_runtime):
    runtime = inline_runtime(small_config())
    learner = runtime.learner
    rollouts = [worker.collect(learner.snapshot()) for worker in runtime.workers]
    return learner, rollouts


def test_learner_refuses_a_rollout_from_another_version(small_config, inline_runtime) -> None:
    """Invariant 6."""
    learner, rollouts = collect_one(small_config, inline_runtime)
    learner.update(rollouts)
    assert learner.version == 1
    obs_before = learner.buffer.obs["obs"].clone()
    with pytest.raises(StaleRolloutError, match=r"version 0, learner is at 1"):
        learner.receive(0, rollouts[0])
    with pytest.raises(StaleRolloutError, match="version"):
        learner.receive(1, dataclasses.replace(rollouts[1], version=7))
    assert torch.equal(learner.buffer.obs["obs"], obs_before)  # nothing was copied in
    with pytest.raises(RuntimeError, match=r"workers \[0, 1\]"):
        learner.update([])  # the refused rollouts do not count as arrived


@pytest.mark.parametrize(
    "field, index, bad",
    [("reward", (3, 1), math.nan), ("obs/obs", (0, 0, 2), math.inf), ("bootstrap_value", (5, 0), math.nan)],
)
def test_learner_refuses_a_non_finite_rollout(small_config, inline_runtime, field: str, index, bad: float) -> None:
    learner, rollouts = collect_one(small_config, inline_runtime)
    tensor = rollouts[0].tensors[field].clone()
    tensor[index] = bad
    before = learner.buffer.tensors[field].clone()
    with pytest.raises(UserError, match=rf"worker 0: {field} holds NaN or inf"):
        learner.receive(0, with_field(rollouts[0], field, tensor))
    assert torch.equal(learner.buffer.tensors[field], before)


def with_field(rollout, name: str, tensor: torch.Tensor):
    return dataclasses.replace(rollout, tensors={**rollout.tensors, name: tensor})


def test_learner_refuses_a_rollout_of_the_wrong_shape(small_config, inline_runtime) -> None:
    learner, rollouts = collect_one(small_config, inline_runtime)
    with pytest.raises(UserError, match=r"obs/obs is \(16, 1, 4\) torch.float32, expected \(16, 2, 4\)"):
        learner.receive(0, with_field(rollouts[0], "obs/obs", rollouts[0].tensors["obs/obs"][:, :1]))


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_truncation_bootstraps_from_final_observation(small_config, inline_runtime, kind: str) -> None:
    """Invariant 7, on StepCounterEnv whose final observations are known from the stored ones:
    truncated steps carry V(normalized final obs) continuing that env's state; others carry 0."""
    config = small_config(
        env={"id": TOY_ENV, "max_episode_steps": 5},
        policy={"kind": kind},
        ppo={"rollout_steps": 24, "sequence_length": 4, "num_minibatches": 2},
        workers={"num_workers": 1, "envs_per_worker": 4},
    )
    runtime = inline_runtime(config)
    for _ in range(2):  # train a little, and make the normalizer stats non-trivial
        runtime.iterate()
    learner, worker = runtime.learner, runtime.workers[0]
    rollout = worker.collect(learner.snapshot())
    T, E, K = config.ppo.rollout_steps, config.workers.envs_per_worker, config.sequence_length
    r = rollout.tensors
    obs, first = r["obs/obs"].clone(), r["first"].clone()
    k, c = obs[..., 0], obs[..., 1]

    # The env's rules, read back from the stored observations.
    assert torch.equal(r["terminated"], (c > 0) & (k == 2))
    assert torch.equal(r["truncated"], (c <= 0) & (k == 4))
    assert r["terminated"].any() and r["truncated"].any()
    assert (r["bootstrap_value"][~r["truncated"]] == 0).all()

    # The weights (and frozen normalizer stats) of the snapshot the worker used, on the CPU.
    policy = worker.policy
    assert learner.obs_rms["obs"].count > 0
    assert torch.equal(policy.preprocess.standardize["obs"].mean, learner.obs_rms["obs"].moments()[0])

    checked, differs_without_state = 0, False
    no_reset = torch.zeros(1, dtype=torch.bool)
    with torch.no_grad():
        for e in range(E):
            hidden = r["hidden"][0, :, :, e : e + 1].clone()
            for t in range(T):
                if t % K == 0:  # the stored chunk-start states are the ones the worker had
                    torch.testing.assert_close(hidden[:, :, 0], r["hidden"][t // K, :, :, e], rtol=0, atol=1e-5)
                (_, critic_x), hidden = policy.features(obs[t : t + 1, e : e + 1], hidden, first[t : t + 1, e : e + 1])
                value = policy.critic_head(critic_x[0, 0]).squeeze(-1)
                torch.testing.assert_close(value, r["value"][t, e], rtol=0, atol=1e-5)  # replay is faithful
                if not r["truncated"][t, e]:
                    continue
                step = obs[t, e, 0] + 1
                final_obs = torch.stack([step, obs[t, e, 1], torch.sin(step)]).unsqueeze(0)
                expected = policy.value(final_obs, hidden, no_reset)[0]
                torch.testing.assert_close(r["bootstrap_value"][t, e], expected, rtol=0, atol=1e-5)
                zero_state = torch.zeros_like(hidden)
                other = policy.value(final_obs, zero_state, no_reset)[0]
                differs_without_state |= bool((other - expected).abs() > 1e-4)
                checked += 1
    assert checked == int(r["truncated"].sum())
    if kind == "lstm":
        assert differs_without_state  # so the check above does tell the env's state apart
