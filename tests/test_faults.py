"""Faults of a real cluster on a real local Ray: a learner that dies, one that cannot start or be
placed, a cluster too small, a slow env, resuming onto another number of workers, a run directory
whose first start failed. Each asserts the message, the time it takes and that no step is lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import psutil
import pytest
import torch

from tests.conftest import make_small_config
from tests.helpers import SLOW_ENV, kill_learner_when, learner_processes, tensorboard_steps
from trainer import train
from trainer.core.errors import UserError
from trainer.runtime.checkpoint import load_checkpoint
from trainer.runtime.learner_group import LearnerFailedError
from trainer.runtime.placement import ClusterTooSmall, Demand, ensure_fits, run_demands, unplaced

pytestmark = pytest.mark.ray


def ray_config(**overrides):
    return make_small_config(execution="ray", **overrides)


def stopped_learners() -> list[psutil.Process]:
    found = []
    for proc in learner_processes():
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() == psutil.STATUS_STOPPED:
                found.append(proc)
    return found


@pytest.mark.parametrize("overlap", [False, True])
def test_learner_killed_mid_run_is_rebuilt_and_every_step_is_trained_once(local_ray, tmp_path, capsys, overlap):
    run_dir = tmp_path / "run"
    config = ray_config(env=SLOW_ENV, ppo={"total_steps": 1536}, workers={"overlap": overlap})
    killer = kill_learner_when(lambda: any(run_dir.glob("events.out.tfevents.*")), delay_s=1.0)  # mid-run
    start = time.monotonic()
    summary = train(config, run_dir=run_dir)
    elapsed = time.monotonic() - start
    killer.join(timeout=5)
    out = capsys.readouterr().out
    assert "the learner died (ActorDiedError" in out and "rebuilding it from its state after the last update" in out
    assert summary["env_steps"] == 1536 and summary["learner_restarts"] == 1, out
    assert tensorboard_steps(run_dir) == list(range(64, 1537, 64))  # neither repeated nor missing
    state = load_checkpoint(run_dir)[1]
    assert state["learner_restarts"] == 1 and state["runtime"]["learner"]["version"] == 24
    adam_steps = {int(s["step"]) for s in state["runtime"]["learner"]["optimizer"]["state"].values()}
    assert adam_steps == {24 * 2 * 2}  # every update ran once: 24 iterations x 2 epochs x 2 minibatches
    print(f"\nlearner killed (overlap={overlap}): run of 1536 steps done in {elapsed:.1f}s")


def test_learner_that_hangs_is_killed_and_rebuilt_and_every_step_is_trained_once(local_ray, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = ray_config(env=SLOW_ENV, ppo={"total_steps": 1536}, learner={"liveness_timeout_s": 2.0})
    stopper = kill_learner_when(lambda: any(run_dir.glob("events.out.tfevents.*")), delay_s=1.0, sig=signal.SIGSTOP)
    start = time.monotonic()
    summary = train(config, run_dir=run_dir)
    elapsed = time.monotonic() - start
    stopper.join(timeout=5)
    out = capsys.readouterr().out
    assert "answered no liveness probe for learner.liveness_timeout_s=2s (stopped or hung)" in out, out
    assert summary["env_steps"] == 1536 and summary["learner_restarts"] == 1, out
    assert tensorboard_steps(run_dir) == list(range(64, 1537, 64))
    deadline = time.monotonic() + 20  # Ray force-kills an actor that does not answer its exit request after ~5 s
    while stopped_learners() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stopped_learners()  # killed, not left stopped
    print(f"\nlearner stopped (SIGSTOP): run of 1536 steps done in {elapsed:.1f}s")


def test_learner_dying_past_its_limit_stops_naming_the_newest_checkpoint(local_ray, tmp_path):
    run_dir = tmp_path / "run"
    config = ray_config(
        env=SLOW_ENV, ppo={"total_steps": 100_000}, learner={"max_restarts": 0}, checkpoint={"every": 1}
    )
    kill_learner_when(lambda: (run_dir / "checkpoints" / "iter_0000002.pt").exists())
    with pytest.raises(LearnerFailedError) as caught:
        train(config, run_dir=run_dir)
    message = str(caught.value)
    newest = load_checkpoint(run_dir)[0]
    assert message.startswith("the learner died (ActorDiedError") and "learner.max_restarts=0" in message, message
    assert f"newest checkpoint {newest}; continue with: python -m trainer train --resume {run_dir}" in message
    assert "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_learner_that_fails_at_start_up_is_the_learners_error(local_ray, tmp_path):
    start = time.monotonic()
    with pytest.raises(UserError, match=r"^learner.device is 'cuda' but no CUDA device is available") as caught:
        train(ray_config(learner={"device": "cuda"}), run_dir=tmp_path / "run")
    assert "rollout worker" not in str(caught.value)
    assert time.monotonic() - start < 60


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_learner_asking_for_a_gpu_the_cluster_lacks_fails_at_once(local_ray, tmp_path):
    start = time.monotonic()
    with pytest.raises(ClusterTooSmall) as caught:
        train(ray_config(learner={"num_gpus": 1}), run_dir=tmp_path / "run")
    assert time.monotonic() - start < 15
    assert str(caught.value) == (
        "the cluster cannot hold this run: the learner asks 1 GPU (learner.num_gpus) but no node has one (the "
        "cluster has 0); set learner.num_gpus: 0 or add a GPU node (with an autoscaler, set "
        "cluster.wait_for_resources_s to wait for nodes)"
    )


def test_workers_asking_more_cpus_than_the_cluster_has(local_ray):
    """local_ray has 4 CPUs: 4 workers and the learner ask 5."""
    said: list[str] = []
    config = ray_config(workers={"num_workers": 4}, cluster={"wait_for_resources_s": 1})
    start = time.monotonic()
    with pytest.raises(ClusterTooSmall) as caught:
        ensure_fits(config, said.append, embedded=False)
    assert 1 <= time.monotonic() - start < 5
    assert str(caught.value) == (
        "the cluster cannot hold this run after waiting 1s: it asks 5 CPUs (workers.num_workers=4 x "
        "workers.num_cpus=1 + learner.num_cpus=1) and the cluster has 4; lower those keys or add nodes"
    )
    assert said == ["waiting up to 1s (cluster.wait_for_resources_s) for nodes: rollout worker 3 pending"]
    ensure_fits(ray_config(workers={"num_workers": 3}), said.append, embedded=False)  # 4 of 4 fit


def test_packing_puts_each_actor_on_one_node():
    config = make_small_config(workers={"num_workers": 3, "num_cpus": 2}, learner={"num_cpus": 2})
    demands = run_demands(config)
    assert unplaced(demands, [{"CPU": 4}, {"CPU": 4}]) == []
    # 8 CPUs in all but in 3s: no node holds two 2-CPU actors, the fourth cannot go anywhere.
    assert [d.name for d in unplaced(demands, [{"CPU": 3}, {"CPU": 3}, {"CPU": 2}])] == ["rollout worker 2"]
    assert unplaced([Demand("w", {"CPU": 1, "sim": 1})], [{"CPU": 8}]) == [Demand("w", {"CPU": 1, "sim": 1})]


def test_workers_sharing_a_process_ask_for_their_resources_together():
    config = make_small_config(workers={"num_workers": 5, "per_process": 2, "num_cpus": 0.5, "resources": {"sim": 1}})
    hosts = [(d.name, d.resources) for d in run_demands(config) if d.name.startswith("rollout")]
    assert hosts == [
        ("rollout workers 0-1", {"CPU": 1.0, "sim": 2}),
        ("rollout workers 2-3", {"CPU": 1.0, "sim": 2}),
        ("rollout worker 4", {"CPU": 0.5, "sim": 1}),
    ]
    # A host is placed whole: the second cannot share the first one's node (2 "sim" of 3 left 1).
    assert [d.name for d in unplaced(run_demands(config), [{"CPU": 2, "sim": 3}, {"CPU": 1, "sim": 2}])] == [
        "rollout worker 4"
    ]


def test_slow_env_is_not_mistaken_for_a_stuck_worker(local_ray, tmp_path):
    """Each step takes 0.2 s, a rollout 1.6 s: past workers.sample_timeout_s=1, yet the workers
    keep stepping, so nothing is replaced."""
    env = {"id": "tests.envs.faults:SlowCartPole", "kwargs": {"step_sleep_s": 0.2}}
    config = ray_config(
        env=env, ppo={"total_steps": 32, "rollout_steps": 8}, workers={"envs_per_worker": 1, "sample_timeout_s": 1.0}
    )
    start = time.monotonic()
    summary = train(config, run_dir=tmp_path / "run")
    assert summary["env_steps"] == 32 and summary["worker_restarts"] == 0
    print(f"\nslow env: 2 rollouts of 1.6 s each, timeout 1 s, done in {time.monotonic() - start:.1f}s, no restart")


def test_resume_onto_more_then_fewer_workers_trains_exactly_the_requested_steps(local_ray, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(ray_config(ppo={"total_steps": 256}, workers={"num_cpus": 0.5}), run_dir=run_dir)  # 64 steps an iteration
    grown = train(
        None, ["ppo.total_steps=768", "workers.num_workers=4"], run_dir=run_dir, resume=run_dir
    )  # 4 workers: 128
    out = capsys.readouterr().out
    assert "resuming with ppo.total_steps 256 -> 768, workers.num_workers 2 -> 4" in out, out
    assert grown["env_steps"] == 768
    assert len(load_checkpoint(run_dir)[1]["restarts"]) == 4  # a worker the run added has its own count
    shrunk = train(None, ["ppo.total_steps=960", "workers.num_workers=1"], run_dir=run_dir, resume=run_dir)
    assert shrunk["env_steps"] == 960  # 1 worker: 32 a step, 6 iterations
    steps = tensorboard_steps(run_dir)
    assert steps == [*range(64, 257, 64), *range(384, 769, 128), *range(800, 961, 32)]
    state = load_checkpoint(run_dir)[1]
    learner = state["runtime"]["learner"]
    assert learner["version"] == 4 + 4 + 6 and learner["env_steps"] == 960
    assert {int(s["step"]) for s in learner["optimizer"]["state"].values()} == {14 * 2 * 2}  # optimizer kept
    assert len(state["restarts"]) == 1 and len(state["runtime"]["worker_rng"]) == 1


def test_run_directory_whose_first_start_failed_starts_again_and_resume_auto_continues(tmp_path):
    run_dir = tmp_path / "run"
    broken = make_small_config(env={"id": "tests.envs.bad:NaNCartPole"})
    with pytest.raises(UserError, match="NaN"):
        train(broken, run_dir=run_dir, resume="auto")
    assert not (run_dir / "checkpoints").exists()
    config = make_small_config(ppo={"total_steps": 128})
    time.sleep(1.0)  # TensorBoard orders a directory's event files by name, whose time is in whole seconds
    assert train(config, run_dir=run_dir, resume="auto")["env_steps"] == 128  # nothing to resume: starts
    time.sleep(1.0)
    again = train(config, ["ppo.total_steps=256"], run_dir=run_dir, resume="auto")  # continues
    assert again["env_steps"] == 256 and again["iterations"] == 4
    assert tensorboard_steps(run_dir) == [64, 128, 192, 256]


def test_step_budget_is_rounded_up_to_whole_iterations_and_said(tmp_path, capsys):
    summary = train(make_small_config(ppo={"total_steps": 100}), run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "ppo.total_steps=100 is not a whole number of iterations of 64 env steps" in out and "training 128" in out
    assert summary["env_steps"] == 128


def test_summary_is_strict_json_when_no_episode_ended(tmp_path):
    train(make_small_config(env={"id": "Pendulum-v1"}, ppo={"total_steps": 64}), run_dir=tmp_path / "run")

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    summary = json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=refuse)
    assert summary["episodes"] == 0 and summary["mean_return_last20"] is None


def test_oversubscribed_embedded_ray_says_so(local_ray, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    ensure_fits(make_small_config(execution="ray", workers={"num_workers": 3, "num_cpus": 0.5}), said.append, True)
    assert said == []  # 1.5 CPUs of workers on 2 cores
    ensure_fits(make_small_config(execution="ray", workers={"num_workers": 3}), said.append, embedded=True)
    assert said == [
        "WARNING: workers.num_workers=3 x workers.num_cpus=1 ask 3 CPUs and this machine has 2 cores: the "
        "workers share them, which is slower than fewer workers with more workers.envs_per_worker"
    ]


def test_timestamp_seed_trains_in_ray_workers(local_ray, tmp_path):
    """A nanosecond timestamp as the seed: each worker's seeds are derived without overflow (they
    were seed * 10_000 + ..., past int64, and the run failed at start)."""
    config = ray_config(seed=1764950000000000000, ppo={"total_steps": 64})
    summary = train(config, run_dir=tmp_path / "run")
    assert summary["iterations"] == 1 and summary["env_steps"] == 64
    assert summary["worker_restarts"] == 0 and summary["learner_restarts"] == 0
