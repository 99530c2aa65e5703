"""`learner.precision`: how `auto` resolves, a clear line where bf16 cannot run, and a bf16
learner's first update agreeing with an fp32 one's."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO_ROOT
from trainer.core.config import load_config
from trainer.core.envs import probe_run
from trainer.core.errors import UserError
from trainer.core.policy import build_policy
from trainer.learning.learner import Learner
from trainer.learning.precision import bf16_supported, use_bf16
from workers.rollout_worker import RolloutWorker

CPU = torch.device("cpu")


def small_config(path: str, *overrides: str):
    return load_config(REPO_ROOT / path, ["workers.envs_per_worker=8", "ppo.rollout_steps=32", *overrides])


@pytest.mark.parametrize(
    "path, layered", [("configs/cartpole.yaml", False), ("configs/cartpole_masked_lstm.yaml", True)]
)
def test_auto_takes_bf16_for_recurrent_and_convolutional_policies_where_the_device_has_it(path, layered):
    config = small_config(path)
    probe = probe_run(config)
    policy = build_policy(probe.obs_spec, probe.action_space, config)
    assert use_bf16("auto", CPU, policy) == (layered and bf16_supported(CPU))
    assert use_bf16("fp32", CPU, policy) is False


def test_bf16_on_a_device_without_it_is_one_line_naming_the_key_and_the_way_out():
    config = small_config("configs/cartpole.yaml")
    probe = probe_run(config)
    policy = build_policy(probe.obs_spec, probe.action_space, config)
    with pytest.raises(UserError) as caught:
        use_bf16("bf16", torch.device("meta"), policy)
    message = str(caught.value)
    assert message.startswith("learner.precision is 'bf16' but the learner's device (meta) has no bf16 instructions")
    assert "use 'auto' or 'fp32'" in message and "\n" not in message


@pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
def test_bf16_and_fp32_learners_agree_on_the_first_update():
    """Same weights, same rollouts, one update each: the loss terms within 2% (or 1e-3), and the
    weights move the same way (the updates' cosine similarity above 0.99)."""
    configs = {p: small_config("configs/cartpole_masked_lstm.yaml", f"learner.precision={p}") for p in ("fp32", "bf16")}
    probe = probe_run(configs["fp32"])
    learners = {p: Learner(config, probe) for p, config in configs.items()}
    before = torch.nn.utils.parameters_to_vector(learners["fp32"].policy.parameters()).clone()
    snapshot = learners["fp32"].snapshot()
    rollouts = [RolloutWorker(configs["fp32"], i, probe).collect(snapshot) for i in range(2)]
    metrics = {p: learner.update(rollouts) for p, learner in learners.items()}
    assert metrics["bf16"]["perf/learner_bf16"] == 1.0 and metrics["fp32"]["perf/learner_bf16"] == 0.0
    for tag in ("losses/policy", "losses/value", "losses/entropy", "losses/total"):
        assert metrics["bf16"][tag] == pytest.approx(metrics["fp32"][tag], rel=2e-2, abs=1e-3), tag
    steps = {
        p: torch.nn.utils.parameters_to_vector(learner.policy.parameters()) - before for p, learner in learners.items()
    }
    assert torch.nn.functional.cosine_similarity(steps["bf16"], steps["fp32"], dim=0) > 0.99
