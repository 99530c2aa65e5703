"""RunningMeanStd: exact parallel merge, in-place updates under inference mode (invariant 2),
gradient-friendly normalize (invariant 3), and delta merging across iterations (invariant 8)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from gymnasium import spaces

from tests.conftest import vector_policy
from trainer.core.config import PolicyConfig
from trainer.core.normalization import MomentStats, RunningMeanStd
from trainer.core.policy import ActorCritic


def make_shards(seed: int = 0) -> list[np.ndarray]:
    """Shards of very different sizes, offsets and scales (float32, like observations)."""
    rng = np.random.default_rng(seed)
    sizes = [1, 7, 300, 64, 2]
    return [
        (rng.normal(loc=10.0 * i - 5.0, scale=0.1 + 3.0 * i, size=(n, 3))).astype(np.float32)
        for i, n in enumerate(sizes)
    ]


def shard_stats(shards: list[np.ndarray]) -> list[MomentStats]:
    stats = []
    for shard in shards:
        rms = RunningMeanStd((3,))
        # Two updates per shard, so update() also has to combine with non-empty stats.
        half = len(shard) // 2
        rms.update(torch.from_numpy(shard[:half]))
        rms.update(torch.from_numpy(shard[half:]))
        stats.append(rms.stats())
    return stats


def assert_matches_numpy(rms: RunningMeanStd, data: np.ndarray) -> None:
    data = data.astype(np.float64)
    assert rms.count == len(data)
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-9, atol=1e-12)


def test_merge_of_shards_equals_concatenation() -> None:
    shards = make_shards()
    merged = RunningMeanStd((3,))
    for stats in shard_stats(shards):
        merged.merge(stats)
    assert merged.mean.dtype == torch.float64
    assert_matches_numpy(merged, np.concatenate(shards))


def test_merge_is_order_independent() -> None:
    stats = shard_stats(make_shards(seed=1))
    results = []
    for order in itertools.permutations(range(len(stats))):
        rms = RunningMeanStd((3,))
        for i in order:
            rms.merge(stats[i])
        results.append((rms.count, rms.mean.clone(), rms.var.clone()))
    count0, mean0, var0 = results[0]
    for count, mean, var in results[1:]:
        assert count == count0
        torch.testing.assert_close(mean, mean0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var, var0, rtol=1e-12, atol=1e-12)


def test_merging_an_empty_delta_changes_nothing() -> None:
    rms = RunningMeanStd((3,))
    rms.update(torch.randn(10, 3))
    before = rms.stats()
    rms.merge(RunningMeanStd((3,)).stats())
    assert rms.count == before.count
    assert torch.equal(rms.mean, before.mean) and torch.equal(rms.m2, before.m2)


def test_stats_are_copies_so_reset_does_not_change_a_shipped_delta() -> None:
    rms = RunningMeanStd((3,))
    rms.update(torch.ones(4, 3))
    shipped = rms.stats()
    rms.reset()
    assert shipped.count == 4
    assert torch.equal(shipped.mean, torch.ones(3))
    assert rms.count == 0 and torch.equal(rms.mean, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("outer_inference_mode", [False, True])
def test_update_is_in_place_and_keeps_ordinary_tensors(outer_inference_mode: bool) -> None:
    """Invariant 2: update() runs in inference mode but only writes into existing storage."""
    rms = RunningMeanStd((3,))
    mean, m2 = rms.mean, rms.m2
    pointers = (mean.data_ptr(), m2.data_ptr())
    x = torch.randn(32, 3) * 4 + 2
    if outer_inference_mode:  # as in the rollout worker, whose collect() is in inference mode
        with torch.inference_mode():
            rms.update(x)
            rms.merge(RunningMeanStd.from_stats(rms.stats()).stats())
    else:
        rms.update(x)
    assert rms.mean is mean and rms.m2 is m2
    assert (rms.mean.data_ptr(), rms.m2.data_ptr()) == pointers
    assert not rms.mean.is_inference() and not rms.m2.is_inference()
    assert rms.count > 0 and rms.mean.abs().sum() > 0  # the update happened


def fitted_rms() -> tuple[RunningMeanStd, torch.Tensor]:
    rms = RunningMeanStd((3,))
    data = torch.randn(200, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([3.0, -2.0, 0.5])
    rms.update(data)
    return rms, data


def test_normalize_matches_formula_and_clips() -> None:
    rms, data = fitted_rms()
    x = torch.tensor([[3.0, -2.0, 0.5], [1e6, -1e6, 0.6]])
    out = rms.normalize(x, clip=5.0)
    d = data.double().numpy()
    expected = (x.double().numpy() - d.mean(0)) / np.sqrt(d.var(0) + 1e-8)
    np.testing.assert_allclose(out.numpy(), np.clip(expected, -5.0, 5.0), rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32


def normalizing_policy(rms: RunningMeanStd) -> ActorCritic:
    policy = vector_policy(3, spaces.Discrete(2), PolicyConfig(hidden_sizes=[8]), normalize_obs=True)
    policy.preprocess.freeze({"obs": rms})
    return policy


def test_preprocessing_on_the_learner_feeds_autograd() -> None:
    """Invariant 3: the policy's preprocessing (frozen mean/std, clip) runs outside inference
    mode on the learner, equals normalize(), and its output backpropagates."""
    rms, _ = fitted_rms()
    policy = normalizing_policy(rms)
    raw = torch.randn(4, 5, 3) * 4
    features = policy.preprocess({"obs": raw})["obs"]
    assert not features.is_inference()
    torch.testing.assert_close(features, rms.normalize(raw, clip=10.0), rtol=0, atol=1e-6)
    actions = torch.randint(0, 2, (4, 5, 1))
    logprob, entropy, value = policy.evaluate_actions(raw, actions, policy.initial_hidden(5), torch.zeros(4, 5).bool())
    (logprob.sum() + entropy.sum() + value.sum()).backward()
    first_layer = policy.actor_torso[0].weight
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0


def test_preprocessing_under_inference_mode_breaks_backward() -> None:
    """Why invariant 3 exists: an inference tensor entering the first layer cannot be saved."""
    rms, _ = fitted_rms()
    policy = normalizing_policy(rms)
    with torch.inference_mode():
        features = policy.preprocess({"obs": torch.randn(4, 5, 3)})["obs"]
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        policy.actor_torso(features).sum().backward()


def test_global_count_equals_observations_seen(small_config, inline_runtime) -> None:
    """Invariant 8: after K iterations with 2 workers the learner's stats are exactly those of
    every observation the workers normalized (merged from deltas, nothing counted twice)."""
    config = small_config(workers={"num_workers": 2, "envs_per_worker": 3})
    runtime = inline_runtime(config)
    iterations = 4
    seen = []
    for _ in range(iterations):
        runtime.iterate()
        seen.append(runtime.learner.buffer.obs["obs"].double().reshape(-1, 4).cpu().numpy())
    rms = runtime.learner.obs_rms["obs"]
    expected_count = iterations * config.ppo.rollout_steps * config.total_envs
    assert rms.count == expected_count
    assert_matches_numpy(rms, np.concatenate(seen))
    # The snapshot carries exactly these stats, frozen into the preprocessor.
    frozen = runtime.learner.snapshot().weights
    mean, std = rms.moments()
    assert torch.equal(frozen["preprocess.standardize.obs.mean"], mean)
    assert torch.equal(frozen["preprocess.standardize.obs.std"], std)
    for worker in runtime.workers:
        assert worker.obs_delta["obs"].count == 0  # the delta starts empty every iteration
