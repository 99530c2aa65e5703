"""The Ray runtime on a real local Ray: learning, exact normalizer merge across workers, version
checks, worker faults (killed process, hang, env exception)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
import ray
import torch

from tests.conftest import REPO_ROOT, make_small_config
from trainer import train
from trainer.core.envs import probe_run
from trainer.core.errors import UserError
from trainer.core.messages import StaleRolloutError
from trainer.runtime.ray_runtime import RayRuntime, WorkerFailedError
from trainer.runtime.training_session import planned_steps

pytestmark = pytest.mark.ray


def ray_config(**overrides):
    return make_small_config(execution="ray", **overrides)


def make_runtime(config, messages=None) -> RayRuntime:
    probe = probe_run(config)
    log = messages.append if messages is not None else print
    return RayRuntime(config, probe, log=log)


def learner_state(runtime: RayRuntime, fn):
    return ray.get(runtime.learner.actor.__ray_call__.remote(fn))


@pytest.mark.learning
def test_ray_learns_cartpole_with_two_workers(local_ray, tmp_path):
    def solved(report) -> bool:
        return report.scalars.get("charts/mean_return_last20", 0.0) >= 475

    summary = train(REPO_ROOT / "configs/cartpole.yaml", run_dir=tmp_path / "run", callbacks=[solved])
    assert summary["execution"] == "ray"
    assert summary["solved_at_step"] is not None and summary["env_steps"] < 100_000
    assert summary["mean_return_last20"] >= 475


@pytest.mark.learning
def test_ray_learns_masked_cartpole_with_lstm(local_ray, tmp_path):
    summary = train(
        REPO_ROOT / "configs/cartpole_masked_lstm.yaml",
        overrides=["ppo.total_steps=150000"],
        run_dir=tmp_path / "run",
        callbacks=[lambda report: report.scalars.get("charts/mean_return_last20", 0.0) >= 475],
    )
    assert summary["solved_at_step"] is not None, summary


def test_normalizer_stats_equal_all_observations_seen(local_ray):
    config = ray_config()
    runtime = make_runtime(config)
    seen = []
    try:
        for _ in range(4):
            runtime.iterate()
            seen.append(learner_state(runtime, lambda learner: learner.buffer.obs["obs"].clone()))
        stats = learner_state(runtime, lambda learner: learner.obs_rms["obs"].stats())
    finally:
        runtime.close()
    everything = np.concatenate([obs.reshape(-1, obs.shape[-1]).numpy() for obs in seen]).astype(np.float64)
    assert stats.count == len(everything) == 4 * config.steps_per_iteration
    np.testing.assert_allclose(stats.mean.numpy(), everything.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose((stats.m2 / stats.count).numpy(), everything.var(0), rtol=1e-9, atol=1e-12)


def learn_with_one_old_rollout(runtime: RayRuntime, old_snapshot) -> None:
    """Worker 0 collects with `old_snapshot`, worker 1 with the current one; the learner gets both."""
    _, old = runtime.start_collecting(0, old_snapshot)
    _, fresh = runtime.start_collecting(1, runtime.learner.actor.snapshot.remote())
    ray.get(runtime.learner.start_update(old + fresh)[0][0])


def test_rollout_from_an_old_version_is_refused(local_ray):
    runtime = make_runtime(ray_config())
    try:
        old_snapshot = runtime.learner.actor.snapshot.remote()
        runtime.iterate()
        with pytest.raises(StaleRolloutError, match="collected with policy version 0, learner is at 1"):
            learn_with_one_old_rollout(runtime, old_snapshot)
    finally:
        runtime.close()


def iterate_killing_host(runtime: RayRuntime, host: int) -> tuple:
    """One iteration, then one during which worker process `host` is SIGKILLed from outside
    while it collects (one collection takes > 0.3 s), then one more: the last two's stats."""
    try:
        runtime.iterate()
        pid = ray.get(runtime.hosts[host].__ray_call__.remote(lambda actor: os.getpid()))
        killer = threading.Timer(0.1, os.kill, (pid, signal.SIGKILL))
        killer.start()
        during = runtime.iterate()
        killer.join()
        return during, runtime.iterate()
    finally:
        runtime.close()


def test_killed_worker_is_replaced_and_training_stays_on_policy(local_ray):
    slow = {"id": "tests.envs.faults:SlowCartPole", "kwargs": {"step_sleep_s": 0.02}, "max_episode_steps": 200}
    config = ray_config(env=slow)
    messages: list[str] = []
    runtime = make_runtime(config, messages)
    during, after = iterate_killing_host(runtime, 1)
    assert during.worker_restarts == after.worker_restarts == [0, 1]
    assert any("rollout worker 1 died" in m and "restart 1/3" in m for m in messages), messages
    assert during.metrics["losses/first_minibatch_ratio_dev"] < 1e-5
    assert after.metrics["losses/first_minibatch_ratio_dev"] < 1e-5


def test_workers_sharing_a_process_train_exactly_as_workers_in_processes_of_their_own(local_ray):
    """Same seeds, 4 workers in 4 processes or in 2 (2 threads each): the same rollouts, so the
    same parameters after two updates, bit for bit, and the same sampling RNG states to save."""
    ends = {}
    for per_process in (1, 2):
        runtime = make_runtime(
            ray_config(workers={"num_workers": 4, "envs_per_worker": 2, "num_cpus": 0.5, "per_process": per_process})
        )
        try:
            for _ in range(2):
                runtime.iterate()
            pids = ray.get([host.__ray_call__.remote(lambda host: os.getpid()) for host in runtime.hosts])
            weights = learner_state(runtime, lambda learner: learner.policy.state_dict())
            ends[per_process] = (weights, runtime.state_dict()["worker_rng"])
        finally:
            runtime.close()
        assert len(set(pids)) == 4 // per_process
    (one, rng_one), (shared, rng_shared) = ends[1], ends[2]
    assert all(torch.equal(one[name], shared[name]) for name in one)
    assert all(torch.equal(a, b) for a, b in zip(rng_one, rng_shared, strict=True))


def test_killed_process_of_two_workers_replaces_both_and_training_stays_on_policy(local_ray):
    slow = {"id": "tests.envs.faults:SlowCartPole", "kwargs": {"step_sleep_s": 0.02}, "max_episode_steps": 200}
    config = ray_config(env=slow, workers={"num_workers": 4, "envs_per_worker": 2, "num_cpus": 0.5, "per_process": 2})
    messages: list[str] = []
    runtime = make_runtime(config, messages)
    during, after = iterate_killing_host(runtime, 1)
    assert during.worker_restarts == after.worker_restarts == [0, 0, 1, 1]
    assert [m for m in messages if "died" in m] == [
        "rollout workers 2-3 died (ActorDiedError); replacing them (one process) (restart 1/3)"
    ], messages
    assert during.metrics["losses/first_minibatch_ratio_dev"] < 1e-5
    assert after.metrics["losses/first_minibatch_ratio_dev"] < 1e-5


def test_killed_worker_run_finishes_with_all_steps(local_ray, tmp_path):
    """Through train(): a worker process that dies mid-collection costs a restart, not steps.
    The env SIGKILLs its own worker process once, at a fixed step, so the death always lands
    inside a collection."""
    flag = tmp_path / "died-once"
    env = {"id": "tests.envs.faults:DieOnceCartPole", "kwargs": {"flag_file": str(flag), "die_at_step": 40}}
    config = ray_config(env=env, ppo={"total_steps": 1280})
    summary = train(config, run_dir=tmp_path / "run")
    assert flag.exists()
    assert summary["env_steps"] == planned_steps(config)
    assert summary["worker_restarts"] == 1


@pytest.mark.parametrize("per_process", [1, 2])
def test_hanging_worker_is_timed_out_and_replaced(local_ray, tmp_path, per_process):
    """With two workers in one process, the process goes, and both workers with it."""
    flag = tmp_path / "hung-once"
    config = ray_config(
        env={"id": "tests.envs.faults:HangOnceCartPole", "kwargs": {"flag_file": str(flag), "hang_at_step": 30}},
        workers={"sample_timeout_s": 5.0, "per_process": per_process},
    )
    messages: list[str] = []
    runtime = make_runtime(config, messages)
    try:
        stats = [runtime.iterate() for _ in range(2)]
    finally:
        runtime.close()
    assert flag.exists()
    assert sum(stats[-1].worker_restarts) == per_process, messages
    assert any("took no env step for workers.sample_timeout_s=5s" in m for m in messages), messages


def test_worker_that_keeps_failing_stops_the_run(local_ray, tmp_path):
    hangs = {"flag_file": str(tmp_path / "f"), "hang_at_step": 10}
    config = ray_config(
        env={"id": "tests.envs.faults:HangOnceCartPole", "kwargs": hangs},
        workers={"sample_timeout_s": 3.0, "max_restarts": 0},
    )
    runtime = make_runtime(config)
    try:
        with pytest.raises(WorkerFailedError, match=r"rollout worker \d .*workers.max_restarts=0"):
            for _ in range(3):
                runtime.iterate()
    finally:
        runtime.close()


def test_env_exception_names_the_env_and_worker(local_ray):
    runtime = make_runtime(ray_config(env={"id": "tests.envs.faults:BrokenCartPole", "kwargs": {"fail_at_step": 5}}))
    try:
        with pytest.raises(UserError) as excinfo:
            runtime.iterate()
    finally:
        runtime.close()
    message = str(excinfo.value)
    assert "env 'tests.envs.faults:BrokenCartPole' raised RuntimeError: simulator exploded (worker " in message
    assert "Traceback" not in message


def test_overlapped_collection_has_exactly_one_version_of_lag(local_ray):
    config = ray_config(workers={"overlap": True})
    runtime = make_runtime(config)
    try:
        lags = [runtime.iterate().policy_lag for _ in range(4)]
        count = learner_state(runtime, lambda learner: learner.obs_rms["obs"].count)
        old_snapshot = runtime.learner.actor.snapshot.remote()
        runtime.iterate()
        runtime.iterate()
        with pytest.raises(StaleRolloutError, match="collected with policy version 4, learner is at 6"):
            learn_with_one_old_rollout(runtime, old_snapshot)
    finally:
        runtime.close()
    assert lags == [0, 1, 1, 1]
    assert count == 4 * config.steps_per_iteration  # every observation counted once, none twice


def test_workers_run_at_lower_cpu_priority_than_the_learner_and_each_at_its_thread_count(local_ray):
    runtime = make_runtime(ray_config(workers={"nice": 3, "torch_threads": 1}, learner={"torch_threads": 2}))

    def settings(_):
        return os.nice(0), torch.get_num_threads()

    try:
        learner_nice, learner_threads = ray.get(runtime.learner.actor.__ray_call__.remote(settings))
        workers = ray.get([worker.__ray_call__.remote(settings) for worker in runtime.hosts])
    finally:
        runtime.close()
    assert workers == [(min(19, learner_nice + 3), 1)] * 2  # Ray starts workers at nice 15; 19 is the floor
    assert workers[0][0] > learner_nice and learner_threads == 2
