"""Many workers: 16 on a latency-bound env reporting their coordination time, workers spread over
a 4-node simulated cluster, and workers that step their envs in subprocesses (async)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import torch
from ray.cluster_utils import Cluster
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT, make_small_config
from trainer import train
from trainer.core.envs import probe_run
from trainer.core.errors import UserError
from trainer.learning.learner import Learner
from trainer.runtime.ray_runtime import RayRuntime
from workers.rollout_worker import RolloutWorker

LATENCY_ENV = "benchmarks.latency_env:LatencyEnv"
STEP_S = 0.005


@pytest.fixture
def repo_on_path():
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


@pytest.mark.ray
def test_sixteen_workers_on_a_latency_bound_env_report_coordination_time(repo_on_path, tmp_path):
    T, E, iterations = 32, 2, 4
    config = {
        "execution": "ray",
        "env": {"id": LATENCY_ENV, "kwargs": {"step_s": STEP_S}},
        "policy": {"kind": "mlp", "hidden_sizes": [16]},
        "ppo": {"rollout_steps": T, "total_steps": iterations * 16 * T * E, "num_minibatches": 2, "update_epochs": 1},
        "workers": {"num_workers": 16, "envs_per_worker": E, "num_cpus": 0.1},
        "checkpoint": {"every": 0},
    }
    summary = train(config, run_dir=tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"scalars": 0})
    events.Reload()

    def series(tag: str) -> list[float]:
        return [point.value for point in events.Scalars(tag)]

    iteration, slowest, coordination = (
        series("perf/iteration_s"),
        series("perf/slowest_rollout_s"),
        series("perf/coordination_s"),
    )
    rollouts = [series(f"workers/{index}/rollout_s") for index in range(16)]
    assert summary["env_steps"] == iterations * 16 * T * E and summary["worker_restarts"] == 0
    assert len(coordination) == iterations and len(series("perf/driver_cpu_s")) == iterations
    # Each rollout waits T x E steps at least; the slowest is the max over the 16 workers'.
    assert all(min(r[i] for r in rollouts) >= T * E * STEP_S for i in range(iterations))
    assert slowest == pytest.approx([max(r[i] for r in rollouts) for i in range(iterations)], rel=1e-6)
    # Without overlap the iteration is the slowest rollout, then the update: what is left over is
    # the coordination, positive and smaller than the iteration.
    for i in range(iterations):
        assert coordination[i] == pytest.approx(iteration[i] - slowest[i], abs=1e-6)
        assert 0 < coordination[i] < iteration[i]
    assert summary["startup_s"] > 0


@pytest.fixture
def four_nodes(repo_on_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False})
    for _ in range(3):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.ray
def test_workers_spread_over_four_nodes_feed_one_learner(four_nodes):
    config = make_small_config(
        execution="ray",
        env={"id": LATENCY_ENV, "kwargs": {"step_s": 0.001}},
        workers={"num_workers": 8, "num_cpus": 0.5},
    )
    probe = probe_run(config)
    runtime = RayRuntime(config, probe, log=lambda message: None)
    try:
        nodes = ray.get(
            [w.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()) for w in runtime.hosts]
        )
        stats = [runtime.iterate() for _ in range(3)]
        version = ray.get(runtime.learner.actor.__ray_call__.remote(lambda learner: learner.version))
    finally:
        runtime.close()
    all_nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert set(nodes) == all_nodes and len(all_nodes) == 4  # SPREAD: every node runs workers
    assert version == 3
    assert all(s.metrics["losses/first_minibatch_ratio_dev"] < 1e-5 for s in stats)
    assert all(len(s.worker_timings) == 8 and all(t["perf/rollout_s"] > 0 for t in s.worker_timings) for s in stats)


def make_worker(vector_env: str, env: dict) -> tuple[RolloutWorker, object]:
    config = make_small_config(env=env, workers={"envs_per_worker": 3, "vector_env": vector_env})
    probe = probe_run(config)
    snapshot = Learner(config, probe).snapshot()
    return RolloutWorker(config, 1, probe), snapshot


def collect_twice(vector_env: str, env: dict) -> tuple[RolloutWorker, list]:
    worker, snapshot = make_worker(vector_env, env)
    return worker, [worker.collect(snapshot) for _ in range(2)]


def test_async_vector_env_collects_what_the_sync_one_does_in_torch_free_subprocesses(repo_on_path):
    env = {"id": "tests.envs.faults:SlowCartPole", "kwargs": {"step_sleep_s": 0.001}}
    sync_worker, sync = collect_twice("sync", env)
    async_worker, asynchronous = collect_twice("async", env)
    try:
        env_processes = [process.pid for process in async_worker.envs.processes]
        maps = [Path(f"/proc/{pid}/maps").read_text() for pid in env_processes]
    finally:
        sync_worker.close()
        async_worker.close()
    assert len(env_processes) == 3 and os.getpid() not in env_processes
    assert not any("libtorch" in text for text in maps), "an env subprocess loaded torch"
    for a, b in zip(sync, asynchronous):
        assert a.tensors.keys() == b.tensors.keys()
        for key in a.tensors:  # same seeds, same actions: the same rollouts, episode ends included
            assert torch.equal(a.tensors[key], b.tensors[key]), key
        assert a.episodes.returns == b.episodes.returns


def test_env_error_in_an_async_subprocess_names_the_env_and_worker(repo_on_path):
    worker, snapshot = make_worker("async", {"id": "tests.envs.faults:BrokenCartPole", "kwargs": {"fail_at_step": 5}})
    expected = (
        r"^env 'tests\.envs\.faults:BrokenCartPole' raised RuntimeError: .*simulator exploded.* \(worker 1, env step"
    )
    try:
        with pytest.raises(UserError, match=expected):
            worker.collect(snapshot)
    finally:
        worker.close()
