"""Shared helpers: the repository root, a factory for small fast configs, small buffers, and
in-process runtimes."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch
from gymnasium import spaces

from trainer.core.config import Config, PolicyConfig, PPOConfig, load_config
from trainer.core.envs import probe_run
from trainer.core.policy import ActorCritic, build_policy
from trainer.core.spec import ObsLeaf, ObsSpec, RolloutSpec
from trainer.learning.buffer import RolloutBuffer
from trainer.runtime.inline import InlineRuntime

REPO_ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "name": "small",
    "seed": 3,
    "execution": "inline",
    "env": {"id": "CartPole-v1"},
    "policy": {"kind": "mlp", "hidden_sizes": [16], "lstm_hidden_size": 16},
    "ppo": {
        "total_steps": 10_000,
        "rollout_steps": 16,
        "sequence_length": 4,
        "num_minibatches": 2,
        "update_epochs": 2,
    },
    "workers": {"num_workers": 2, "envs_per_worker": 2},
    # TRAINER_TEST_DEVICE=cuda runs every small-config learner on the GPU (see README: Tests).
    "learner": {"device": os.environ.get("TRAINER_TEST_DEVICE", "cpu")},
    "logging": {"progress_interval_s": 1000.0},
}


def _deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def vector_policy(obs_dim: int, action_space, policy: PolicyConfig, normalize_obs: bool = False) -> ActorCritic:
    """A policy for a flat Box observation of `obs_dim` floats, outside any runtime."""
    obs = ObsSpec.from_space(spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float32), "test")
    return build_policy(obs, action_space, Config(policy=policy, ppo=PPOConfig(normalize_obs=normalize_obs)))


def make_buffer(T: int, N: int, K: int = 1, state_shape: tuple[int, int] = (0, 0)) -> RolloutBuffer:
    """A CPU buffer of T steps x N envs (one worker) with a 2-float observation, one discrete
    action and an LSTM-shaped state of `state_shape` = (L, H), outside any learner."""
    layers, size = state_shape
    spec = RolloutSpec.build(
        ObsSpec((ObsLeaf("obs", "vector", (2,), torch.float32),)),
        action_dim=1,
        action_dtype=torch.long,
        state_dims=(2, layers, None, size),
        rollout_steps=T,
        sequence_length=K,
    )
    return RolloutBuffer(spec, num_envs=N, envs_per_worker=N, device=torch.device("cpu"))


def buffer_tensors(buffer: RolloutBuffer) -> dict[str, torch.Tensor]:
    """Every tensor a buffer allocates, by name: each rollout field (each observation leaf as
    `obs/<key>`) and the advantages and returns."""
    return {**buffer.tensors, "advantage": buffer.advantage, "ret": buffer.ret}


def make_small_config(**overrides: Any) -> Config:
    """SMALL with sections replaced key by key, e.g. `make_small_config(policy={"kind": "lstm"})`."""
    return load_config(_deep_update(copy.deepcopy(SMALL), overrides))


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module; workers import the test envs from the repo root."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def small_config() -> Callable[..., Config]:
    return make_small_config


@pytest.fixture
def inline_runtime() -> Iterator[Callable[[Config], InlineRuntime]]:
    """Factory for in-process runtimes (learner + workers); their envs are closed afterwards."""
    made: list[InlineRuntime] = []

    def make(config: Config) -> InlineRuntime:
        probe = probe_run(config)
        runtime = InlineRuntime(config, probe)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


INLINE_ARGS = ["--set", "execution=inline", "--set", "ppo.rollout_steps=32", "--set", "workers.envs_per_worker=2"]
"""CLI overrides for a small in-process run."""


def cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` from the repository root, as a user runs it; output captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, **kwargs,
    )  # fmt: skip


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """Leave with pytest's exit status once every report is written, without the interpreter's
    teardown: with Ray's and torch's native threads of the tests still in the process, that
    teardown crashed once in a whole-suite run (SIGSEGV after '500 passed'), turning a green run
    red. The crash is not in a test; `make test` runs Python with faulthandler, so it would show."""
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
