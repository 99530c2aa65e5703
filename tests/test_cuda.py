"""The learner on CUDA (skipped without a GPU): same invariants as on CPU, same numbers."""

from __future__ import annotations

import math

import pytest
import torch
from gymnasium import spaces

from tests.conftest import buffer_tensors, make_small_config, vector_policy
from trainer.core.config import PolicyConfig
from trainer.core.envs import probe_run
from trainer.core.normalization import RunningMeanStd
from trainer.runtime.inline import InlineRuntime

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def runtime_for(**overrides) -> InlineRuntime:
    config = make_small_config(execution="inline", **overrides)
    probe = probe_run(config)
    return InlineRuntime(config, probe)


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for item in value for t in tensors_in(item)]
    return []


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_cuda_learner_keeps_ratio_one_and_learns(kind):
    """Invariants 4 and 5 on the GPU: every buffer tensor (each observation leaf included) stays
    where it was allocated and holds no inference tensor, rollouts pass through pinned host
    memory, and the first minibatch's ratio is 1."""
    runtime = runtime_for(
        env={"id": "MaskedVelocityCartPole-v1"} if kind == "lstm" else {"id": "CartPole-v1"},
        policy={"kind": kind},
        learner={"device": "cuda"},
    )
    try:
        buffer = runtime.learner.buffer
        tensors = buffer_tensors(buffer)
        pointers = {name: t.data_ptr() for name, t in tensors.items()}
        stats = [runtime.iterate() for _ in range(4)]
    finally:
        runtime.close()
    assert all(t.device.type == "cuda" for t in tensors.values())
    assert all(staged.is_pinned() for staged in buffer._staging.values() if staged.numel())
    for name, tensor in buffer_tensors(buffer).items():
        assert tensor is tensors[name] and tensor.data_ptr() == pointers[name], name
        assert not tensor.is_inference(), name
    for s in stats:
        assert s.metrics["losses/first_minibatch_ratio_dev"] < 1e-5
        assert math.isfinite(s.metrics["losses/total"])
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


def test_cuda_preprocessing_runs_on_device_with_grad():
    """Invariant 3 on the GPU: the policy's preprocessing, with stats frozen from the CPU
    normalizer as the learner does, normalizes on the device outside inference mode, equals
    normalize(), and its output backpropagates."""
    rms = RunningMeanStd((3,))
    rms.update(torch.randn(100, 3) * 2 + 1)
    policy = vector_policy(3, spaces.Discrete(2), PolicyConfig(hidden_sizes=[8]), normalize_obs=True).to("cuda")
    policy.preprocess.freeze({"obs": rms})
    x = torch.randn(5, 3, device="cuda", requires_grad=True)
    out = policy.preprocess({"obs": x})["obs"]
    assert out.device.type == "cuda" and not out.is_inference()
    torch.testing.assert_close(out.cpu(), rms.normalize(x.detach().cpu(), clip=10.0), rtol=0, atol=1e-5)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_checkpoint_written_by_a_cuda_learner_loads_on_cpu(tmp_path):
    """The checkpoint holds CPU tensors only (read here without map_location), and a CPU learner
    takes its state."""
    from trainer import train
    from trainer.runtime.checkpoint import find_checkpoint, load_checkpoint

    config = make_small_config(execution="inline", learner={"device": "cuda"}, ppo={"total_steps": 256})
    train(config, run_dir=tmp_path / "run")
    as_written = torch.load(find_checkpoint(tmp_path / "run"), weights_only=True)
    devices = {t.device.type for t in tensors_in(as_written)}
    assert devices == {"cpu"}
    _, state = load_checkpoint(tmp_path / "run")
    cpu = runtime_for(learner={"device": "cpu"})
    try:
        cpu.learner.load_state_dict(state["runtime"]["learner"])
    finally:
        cpu.close()
