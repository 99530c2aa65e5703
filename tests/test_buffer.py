"""The rollout buffer: allocated once and reused, stores values not inference flags (invariant 4),
GAE on a hand-worked case (invariant 7), and minibatches made of whole (chunk, env) sequences."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import buffer_tensors, make_buffer
from trainer.learning.distributed import LocalCollective
from trainer.learning.ppo import ppo_loss

ENVS = {
    "vector": {"id": "CartPole-v1"},
    "image": {"id": "tests.envs.toy:PixelSideEnv", "max_episode_steps": 5},
    "dict": {"id": "tests.envs.toy:PixelSideEnv", "kwargs": {"cue": True}, "max_episode_steps": 5},
    "discrete": {"id": "FrozenLake-v1"},
}
FIRST_LEAF = {"vector": "obs", "image": "obs", "dict": "image", "discrete": "obs"}
STORED_DTYPE = {"vector": torch.float32, "image": torch.uint8, "dict": torch.uint8, "discrete": torch.long}


@pytest.mark.parametrize("env", list(ENVS))
def test_storage_is_allocated_once(small_config, inline_runtime, env: str) -> None:
    """Invariant 4: no field is reallocated across iterations, yet the contents change; image
    leaves are stored as uint8, discrete ones as indices."""
    runtime = inline_runtime(small_config(env=ENVS[env], policy={"kind": "lstm"}))
    buffer = runtime.learner.buffer
    leaf = FIRST_LEAF[env]
    assert buffer.obs[leaf].dtype == STORED_DTYPE[env]
    tensors = buffer_tensors(buffer)
    pointers = {name: t.data_ptr() for name, t in tensors.items()}
    previous_obs = buffer.obs[leaf].clone()
    for _ in range(3):
        runtime.iterate()
        assert not torch.equal(buffer.obs[leaf], previous_obs)
        previous_obs = buffer.obs[leaf].clone()
        for name, tensor in buffer_tensors(buffer).items():
            assert tensor is tensors[name], name
            assert tensor.data_ptr() == pointers[name], name


@pytest.mark.parametrize("env", list(ENVS))
@pytest.mark.parametrize("kind", ["mlp", "lstm", "tests.envs.networks:GRUCore"])
def test_stored_rollouts_are_ordinary_tensors_that_backpropagate(small_config, inline_runtime, kind, env) -> None:
    """Invariant 4: rollouts made in inference mode, copied in, give a buffer autograd can use."""
    config = small_config(env=ENVS[env], policy={"kind": kind})
    runtime = inline_runtime(config)
    learner = runtime.learner
    snapshot = learner.snapshot()
    rollouts = [worker.collect(snapshot) for worker in runtime.workers]
    first_rollout = rollouts[0].tensors
    leaf = "obs/" + FIRST_LEAF[env]
    assert first_rollout[leaf].is_inference() and first_rollout["hidden"].is_inference()  # the premise
    for slot, rollout in enumerate(rollouts):
        learner.receive(slot, rollout)

    buffer = learner.buffer
    for name, tensor in buffer_tensors(buffer).items():
        assert not tensor.is_inference(), name
    E = config.workers.envs_per_worker
    assert torch.equal(buffer.tensors[leaf][:, E : 2 * E].cpu(), rollouts[1].tensors[leaf])
    env_axis = buffer.state_axis + 1  # the LSTM's [C, 2, L, N, H], the GRU's [C, 1, N, H]
    assert torch.equal(buffer.hidden.narrow(env_axis, E, E).cpu(), rollouts[1].tensors["hidden"])
    assert torch.equal(buffer.last_value[E : 2 * E].cpu(), rollouts[1].tensors["last_value"])
    assert torch.equal(buffer.actions[:, :E].cpu(), first_rollout["actions"])

    buffer.compute_advantages(0.99, 0.95)
    batch = next(buffer.minibatches(config.ppo.num_minibatches, torch.Generator().manual_seed(0)))
    logprob, entropy, value = learner.policy.evaluate_actions(batch.obs, batch.actions, batch.hidden, batch.first)
    ppo_loss(batch, logprob, entropy, value, config.ppo, LocalCollective()).loss.backward()
    grads = [p.grad for p in learner.policy.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_gae_hand_worked_case() -> None:
    """Invariant 7 in GAE. T=4, N=2. Env 0 terminates at t=1 (its stored bootstrap value must be
    ignored); env 1 is truncated at t=2 and bootstraps from V(final obs) = 0.9."""
    g, lam = 0.9, 0.8
    buffer = make_buffer(T=4, N=2)
    buffer.reward.copy_(torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.0, 1.0], [1.0, 2.0]]))
    buffer.value.copy_(torch.tensor([[0.5, 0.1], [0.4, 0.2], [0.3, 0.3], [0.2, 0.4]]))
    buffer.terminated[1, 0] = True
    buffer.truncated[2, 1] = True
    buffer.bootstrap_value[1, 0] = 5.0  # terminated: must not be used
    buffer.bootstrap_value[2, 1] = 0.9
    buffer.last_value.copy_(torch.tensor([0.7, -0.6]))
    buffer.compute_advantages(g, lam)

    # Env 0: the recursion restarts at the termination (t=1) and runs into last_value at t=3.
    a03 = 1.0 + g * 0.7 - 0.2
    a02 = (0.0 + g * 0.2 - 0.3) + g * lam * a03
    a01 = 2.0 + g * 0.0 - 0.4  # terminated: no value after, no advantage carried back
    a00 = (1.0 + g * 0.4 - 0.5) + g * lam * a01
    # Env 1: truncated at t=2, so t=2 uses the bootstrap value and t=3 is a fresh episode.
    a13 = 2.0 + g * -0.6 - 0.4
    a12 = 1.0 + g * 0.9 - 0.3  # truncated: bootstrap, and nothing carried back from t=3
    a11 = (-1.0 + g * 0.3 - 0.2) + g * lam * a12
    a10 = (0.5 + g * 0.2 - 0.1) + g * lam * a11
    expected = torch.tensor([[a00, a10], [a01, a11], [a02, a12], [a03, a13]])
    torch.testing.assert_close(buffer.advantage, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(buffer.ret, expected + buffer.value, rtol=0, atol=1e-6)


def test_gae_uses_given_rewards_instead_of_stored() -> None:
    buffer = make_buffer(T=2, N=1)
    buffer.reward.fill_(100.0)
    buffer.compute_advantages(0.5, 1.0, reward=torch.tensor([[1.0], [2.0]]))
    torch.testing.assert_close(buffer.advantage, torch.tensor([[1.0 + 0.5 * 2.0], [2.0]]))


@pytest.mark.parametrize("K", [1, 3, 12])  # single steps, sequences, the whole rollout: each its own path
def test_minibatches_are_whole_sequences_each_once_per_epoch(K: int) -> None:
    T, N, L, H = 12, 4, 2, 5
    C = T // K
    buffer = make_buffer(T=T, N=N, K=K, state_shape=(L, H))
    t_index = torch.arange(T).view(T, 1).expand(T, N)
    n_index = torch.arange(N).view(1, N).expand(T, N)
    buffer.obs["obs"][..., 0] = t_index.float()  # obs says where it is stored: (t, n)
    buffer.obs["obs"][..., 1] = n_index.float()
    buffer.actions[..., 0] = t_index * 10 + n_index
    for name in ("logprob", "value", "advantage", "ret"):
        getattr(buffer, name).copy_(torch.randn(T, N))
    buffer.first.copy_(torch.rand(T, N) < 0.3)
    buffer.hidden.copy_(torch.randn(C, 2, L, N, H))

    generator = torch.Generator().manual_seed(0)
    orders = []
    for _epoch in range(2):
        seen = []
        for batch in buffer.minibatches(num_minibatches=4, generator=generator):
            assert batch.obs["obs"].shape == (K, C * N // 4, 2)
            assert batch.hidden.shape == (2, L, C * N // 4, H)
            obs = batch.obs["obs"]
            for b in range(obs.shape[1]):
                t0, n = int(obs[0, b, 0]), int(obs[0, b, 1])
                assert t0 % K == 0
                c, rows = t0 // K, slice(t0, t0 + K)
                seen.append((c, n))
                assert torch.equal(batch.obs["obs"][:, b], buffer.obs["obs"][rows, n])
                assert torch.equal(batch.actions[:, b], buffer.actions[rows, n])
                for name in ("logprob", "value", "advantage", "ret", "first"):
                    assert torch.equal(getattr(batch, name)[:, b], getattr(buffer, name)[rows, n]), name
                assert torch.equal(batch.hidden[:, :, b], buffer.hidden[c, :, :, n])
        assert sorted(seen) == [(c, n) for c in range(C) for n in range(N)]
        orders.append(seen)
    assert orders[0] != orders[1]  # shuffled anew every epoch


def test_rollout_fields_have_the_shapes_the_buffer_expects(small_config, inline_runtime) -> None:
    config = small_config(policy={"kind": "lstm"})
    runtime = inline_runtime(config)
    rollout = runtime.workers[0].collect(runtime.learner.snapshot())
    expected = runtime.learner.buffer.expected_shapes()
    assert set(rollout.tensors) == set(expected)
    for name, tensor in rollout.tensors.items():
        assert (tuple(tensor.shape), tensor.dtype) == expected[name], name
    T, E, K = config.ppo.rollout_steps, config.workers.envs_per_worker, config.sequence_length
    assert expected["hidden"][0] == (T // K, 2, 1, E, 16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_cuda_buffer_through_pinned_staging(small_config, inline_runtime, kind: str) -> None:
    """On CUDA, rollouts go through pinned staging and asynchronous copies: the values must still
    land in the right columns, storage stays put, and the ratio invariant holds."""
    config = small_config(policy={"kind": kind}, learner={"device": "cuda"}, env={"max_episode_steps": 15})
    runtime = inline_runtime(config)
    learner, buffer = runtime.learner, runtime.learner.buffer
    pointers = {name: t.data_ptr() for name, t in buffer_tensors(buffer).items()}
    for _ in range(3):
        assert runtime.iterate().metrics["losses/first_minibatch_ratio_dev"] < 1e-5
    rollouts = [worker.collect(learner.snapshot()) for worker in runtime.workers]
    for slot, rollout in enumerate(rollouts):
        learner.receive(slot, rollout)
    torch.cuda.synchronize()
    E = config.workers.envs_per_worker
    for slot, rollout in enumerate(rollouts):
        columns = slice(slot * E, (slot + 1) * E)
        assert torch.equal(buffer.obs["obs"][:, columns].cpu(), rollout.tensors["obs/obs"])
        assert torch.equal(buffer.actions[:, columns].cpu(), rollout.tensors["actions"])
        assert torch.equal(buffer.hidden[:, :, :, columns].cpu(), rollout.tensors["hidden"])
        assert torch.equal(buffer.last_value[columns].cpu(), rollout.tensors["last_value"])
    for name, tensor in buffer_tensors(buffer).items():
        assert tensor.is_cuda and not tensor.is_inference(), name
        assert tensor.data_ptr() == pointers[name], name
