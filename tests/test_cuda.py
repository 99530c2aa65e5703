"""The learner on CUDA (skipped without a GPU): same invariants as on CPU, same numbers."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_small_config
from trainer.core.envs import probe_env
from trainer.runtime.inline import InlineRuntime

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def runtime_for(**overrides) -> InlineRuntime:
    config = make_small_config(execution="inline", **overrides)
    probe = probe_env(config.env, config.policy)
    return InlineRuntime(config, probe)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_cuda_learner_keeps_ratio_one_and_learns(kind):
    runtime = runtime_for(
        env={"id": "MaskedVelocityCartPole-v1"} if kind == "lstm" else {"id": "CartPole-v1"},
        policy={"kind": kind},
        learner={"device": "cuda"},
    )
    try:
        buffer = runtime.learner.buffer
        pointers = {name: getattr(buffer, name).data_ptr() for name in ("obs", "hidden", "advantage")}
        stats = [runtime.iterate() for _ in range(4)]
    finally:
        runtime.close()
    assert buffer.obs["obs"].device.type == "cuda"
    assert all(staged.is_pinned() for staged in buffer._staging.values() if staged.numel())
    assert not buffer.obs["obs"].is_inference() and not buffer.hidden.is_inference()
    assert {name: getattr(buffer, name).data_ptr() for name in pointers} == pointers
    for s in stats:
        assert s.metrics["losses/first_minibatch_ratio_dev"] < 1e-5
        assert torch.isfinite(torch.tensor(s.metrics["loss"]))
    assert runtime.learner.version == 4


def test_cuda_and_cpu_learners_agree_on_the_first_update():
    """Same seed, same rollouts: the CUDA update lands on the CPU update's parameters (float tolerance)."""
    results = {}
    for device in ("cpu", "cuda"):
        runtime = runtime_for(policy={"kind": "lstm"}, learner={"device": device})
        try:
            runtime.iterate()
            results[device] = {k: v.detach().cpu() for k, v in runtime.learner.policy.state_dict().items()}
        finally:
            runtime.close()
    for name, value in results["cpu"].items():
        torch.testing.assert_close(results["cuda"][name], value, rtol=1e-3, atol=1e-4, msg=name)


def test_cuda_normalizer_normalizes_on_device_with_grad():
    from trainer.core.normalization import RunningMeanStd

    rms = RunningMeanStd((3,))
    rms.update(torch.randn(100, 3) * 2 + 1)
    x = torch.randn(5, 3, device="cuda", requires_grad=True)
    out = rms.normalize(x, clip=5.0)
    assert out.device.type == "cuda" and not out.is_inference()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_checkpoint_written_by_a_cuda_learner_loads_on_cpu(tmp_path):
    from trainer import train
    from trainer.runtime.checkpoint import load_checkpoint

    config = make_small_config(execution="inline", learner={"device": "cuda"}, ppo={"total_steps": 256})
    train(config, run_dir=tmp_path / "run")
    _, state = load_checkpoint(tmp_path / "run")
    tensors = list(state["runtime"]["learner"]["policy"].values())
    assert all(t.device.type == "cpu" for t in tensors)
    cpu = runtime_for(learner={"device": "cpu"})
    try:
        cpu.learner.load_state_dict(state["runtime"]["learner"])
    finally:
        cpu.close()
