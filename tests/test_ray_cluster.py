"""A two-node Ray cluster on this machine: workers placed on the second node by a custom
resource, and training that survives losing a node."""

from __future__ import annotations

import os
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from tests.conftest import REPO_ROOT, make_small_config
from trainer.core.envs import probe_run
from trainer.runtime.ray_runtime import RayRuntime

pytestmark = pytest.mark.ray


@pytest.fixture
def two_nodes():
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    second = cluster.add_node(num_cpus=2, resources={"rollout_node": 2})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    yield cluster, second
    ray.shutdown()
    cluster.shutdown()


def node_of(_actor) -> str:
    return ray.get_runtime_context().get_node_id()


def make_runtime(config, messages):
    probe = probe_run(config)
    return RayRuntime(config, probe, log=messages.append)


def test_workers_pinned_to_second_node_feed_the_learner(two_nodes):
    _, second = two_nodes
    config = make_small_config(execution="ray", workers={"resources": {"rollout_node": 1}})
    runtime = make_runtime(config, [])
    try:
        worker_nodes = ray.get([worker.__ray_call__.remote(node_of) for worker in runtime.hosts])
        stats = [runtime.iterate() for _ in range(3)]
        version = ray.get(runtime.learner.actor.__ray_call__.remote(lambda learner: learner.version))
    finally:
        runtime.close()
    assert worker_nodes == [second.node_id, second.node_id]
    assert version == 3
    assert all(s.metrics["losses/first_minibatch_ratio_dev"] < 1e-5 for s in stats)


def test_training_survives_losing_a_node(two_nodes):
    cluster, second = two_nodes
    config = make_small_config(
        execution="ray", env={"id": "tests.envs.faults:SlowCartPole"}, workers={"sample_timeout_s": 30.0}
    )
    messages: list[str] = []
    runtime = make_runtime(config, messages)
    try:
        worker_nodes = ray.get([worker.__ray_call__.remote(node_of) for worker in runtime.hosts])
        assert second.node_id in worker_nodes, "SPREAD placement should use both nodes"
        runtime.iterate()
        remover = threading.Timer(0.05, cluster.remove_node, (second,))
        remover.start()
        stats = [runtime.iterate() for _ in range(3)]
        remover.join()
        time.sleep(0.1)
    finally:
        runtime.close()
    assert sum(stats[-1].worker_restarts) >= 1
    assert any("died" in m for m in messages), messages
    assert all(s.metrics["losses/first_minibatch_ratio_dev"] < 1e-5 for s in stats)


def test_two_learners_on_two_nodes(two_nodes):
    """learner.placement: spread puts the ranks of a placement group on different nodes; the
    group's collectives then cross nodes, and rollouts stay on policy."""
    config = make_small_config(execution="ray", learner={"num_learners": 2, "placement": "spread"})
    runtime = make_runtime(config, [])
    try:
        nodes = ray.get([actor.__ray_call__.remote(node_of) for actor in runtime.learner.actors])
        stats = [runtime.iterate() for _ in range(3)]
    finally:
        runtime.close()
    assert len(set(nodes)) == 2
    assert all(s.metrics["losses/first_minibatch_ratio_dev"] < 1e-5 for s in stats)
