"""The search space format: which keys are config keys, what each sampler draws, and the trial
config a sampled point gives (no Ray needed)."""

from __future__ import annotations

import pytest

from trainer.core.config import load_config
from trainer.sweep.space import (
    RANDINT_CHECKED,
    Axis,
    SpaceError,
    is_config_key,
    load_space,
    sampled_config,
    trial_config,
)


@pytest.mark.parametrize(
    ("key", "valid"),
    [("ppo.lr", True), ("seed", True), ("env.kwargs.nan_at_step", True), ("workers.resources.gpu_slot", True),
     ("ppo", False), ("ppo.lrr", False), ("ppo.lr.x", False), ("nope", False)],
)  # fmt: skip
def test_config_keys_are_settings_or_keys_inside_a_mapping_setting(key, valid):
    assert is_config_key(key) is valid


def test_samplers_draw_within_their_bounds_randint_including_both_ends():
    draws = {name: [Axis("k", name, values).to_tune().sample() for _ in range(400)]
             for name, values in {"randint": [2, 4], "uniform": [0.1, 0.3], "loguniform": [1e-4, 1e-2],
                                  "choice": [[64], [32, 32]]}.items()}  # fmt: skip
    assert set(draws["randint"]) == {2, 3, 4}
    assert all(0.1 <= v <= 0.3 for v in draws["uniform"])
    assert all(1e-4 <= v <= 1e-2 for v in draws["loguniform"])
    assert sum(v < 1e-3 for v in draws["loguniform"]) == pytest.approx(200, abs=60)  # half below the log midpoint
    assert {tuple(v) for v in draws["choice"]} == {(64,), (32, 32)}
    assert Axis("seed", "grid", [1, 2]).to_tune() == {"grid_search": [1, 2]}
    assert not Axis("seed", "grid", [1, 2]).mutable and Axis("k", "choice", [1]).mutable


def test_a_trial_config_is_the_base_with_its_values_and_the_space_checks_every_edge(tmp_path):
    base = load_config("configs/cartpole.yaml").model_dump()
    config = trial_config(base, {"ppo.lr": 3e-4, "env.kwargs.sutton_barto_reward": True})
    assert config.ppo.lr == 3e-4 and config.env.kwargs == {"sutton_barto_reward": True}
    assert config.ppo.clip_coef == load_config("configs/cartpole.yaml").ppo.clip_coef
    space = tmp_path / "space.yaml"
    space.write_text("ppo.update_epochs: {randint: [1, 8]}\nppo.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    assert [(a.key, a.sampler, a.values) for a in load_space(space, base)] == [
        ("ppo.update_epochs", "randint", [1, 8]), ("ppo.lr", "loguniform", [1e-4, 1e-2])]  # fmt: skip
    space.write_text("ppo.update_epochs: {randint: [0, 8]}\n")
    with pytest.raises(SpaceError, match=r"ppo.update_epochs=0 gives an invalid config: ppo.update_epochs: Input"):
        load_space(space, base)
    space.write_text("ppo.lr: {loguniform: [0, 1.0e-2]}\n")
    with pytest.raises(SpaceError, match=r"ppo.lr: loguniform needs low > 0, got \[0, 0.01\]"):
        load_space(space, base)


def test_a_randint_is_checked_at_every_integer_up_to_a_width_and_a_refused_draw_names_its_sampler():
    base = load_config("configs/cartpole.yaml").model_dump()  # 1024 samples an iteration
    assert Axis("k", "randint", [2, 5]).checked_values() == [2, 5, 3, 4]
    assert Axis("k", "randint", [0, RANDINT_CHECKED]).checked_values() == [0, RANDINT_CHECKED]
    assert Axis("k", "uniform", [0.1, 0.3]).checked_values() == [0.1, 0.3]
    axes = [Axis("ppo.num_minibatches", "randint", [1, 4096]), Axis("seed", "grid", [1, 2])]
    assert sampled_config(base, {"ppo.num_minibatches": 512, "seed": 2}, axes, "s.yaml").ppo.num_minibatches == 512
    with pytest.raises(SpaceError) as refused:
        sampled_config(base, {"ppo.num_minibatches": 3, "seed": 1}, axes, "s.yaml")
    assert str(refused.value) == (
        "s.yaml: the trial's ppo.num_minibatches=3 (randint [1, 4096]), seed=1 (grid [1, 2]) give an invalid config: "
        "ppo.num_minibatches (3) must divide the 1024 samples of one iteration "
        "(rollout_steps x num_workers x envs_per_worker)"
    )
