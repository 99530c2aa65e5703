"""Ray's out-of-memory killer takes a rollout worker: the worker is replaced, the run trains every
step, and the user is told once that memory ran out, with the figures and the keys to lower."""

from __future__ import annotations

import psutil
import pytest
from ray._private.utils import get_system_memory, get_used_memory

from tests.conftest import REPO_ROOT, make_small_config
from trainer import train

pytestmark = pytest.mark.ray


def test_worker_killed_for_memory_is_replaced_and_the_run_says_why_once(tmp_path, monkeypatch, capsys):
    # The embedded Ray's memory monitor kills one process at a time, at 2.5 GB above what is in use
    # now (the larger of two ways to count it): the run's own Ray processes, learner and worker take
    # up to ~1.5 GB of that, and the env takes 4.
    memory = psutil.virtual_memory()
    used = max(get_used_memory(), memory.total - memory.available)
    threshold = (used + 2.5e9) / get_system_memory()
    monkeypatch.setenv("RAY_memory_usage_threshold", f"{threshold:.4f}")
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "100")
    monkeypatch.setenv("RAY_worker_killing_policy_by_group", "true")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    env = {"id": "tests.envs.faults:MemoryHogCartPole", "kwargs": {"flag_file": str(tmp_path / "hog"), "hog_gb": 4.0}}
    config = make_small_config(execution="ray", env=env, ppo={"total_steps": 1024}, workers={"num_workers": 1})
    summary = train(config, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert summary["env_steps"] == 1024 and summary["worker_restarts"] == 1, out
    assert "rollout worker 0 was killed by Ray's out-of-memory killer (its node used" in out, out
    assert out.count("memory ran out on a worker's node: lower workers.envs_per_worker") == 1, out
