"""Data-parallel learners (learner.num_learners) on a real local Ray with gloo: two learners
compute what one does, configs they cannot run are refused in one line, a rank that dies is
rebuilt with the group, and a resume may change the number of learners (two learners on two
nodes: tests/test_ray_cluster.py)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import make_small_config
from tests.helpers import SLOW_ENV, kill_learner_when, learner_processes, tensorboard_steps
from trainer import train
from trainer.core.config import load_config
from trainer.core.errors import UserError
from trainer.runtime.checkpoint import load_checkpoint
from trainer.runtime.learner_group import LearnerFailedError
from trainer.runtime.placement import ClusterTooSmall

pytestmark = pytest.mark.ray

PIXELS = {"id": "tests.envs.toy:PixelSideEnv", "max_episode_steps": 10}
KINDS = {"mlp": ({"id": "CartPole-v1"}, "mlp"), "lstm": ({"id": "CartPole-v1"}, "lstm"), "cnn": (PIXELS, "mlp")}
LOSSES = ("losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clip_fraction",
          "losses/grad_norm", "losses/explained_variance")  # fmt: skip


def learners(count: int, learner: dict | None = None, **overrides):
    return make_small_config(execution="ray", learner={"num_learners": count, **(learner or {})}, **overrides)


@pytest.mark.parametrize("kind", list(KINDS))
def test_two_learners_end_with_the_parameters_and_losses_of_one(local_ray, tmp_path, kind):
    """fp32 learners: in bf16 a shard's features round differently from the whole batch's (the
    CNN's parameters then differ by ~5e-4 after 3 iterations)."""
    env, policy = KINDS[kind]
    runs = {}
    for count in (1, 2):
        reports = []
        learner = {"precision": "fp32"}
        config = learners(count, learner, env=env, policy={"kind": policy}, ppo={"total_steps": 3 * 64})
        train(config, run_dir=tmp_path / str(count), callbacks=[reports.append])
        runs[count] = load_checkpoint(tmp_path / str(count))[1]["runtime"]["learner"], reports
    (one, one_reports), (two, two_reports) = runs[1], runs[2]
    differences = {name: (one["policy"][name] - two["policy"][name]).abs().max().item() for name in one["policy"]}
    print(
        f"\n{kind}: max abs parameter difference, 1 vs 2 learners after 3 iterations: {max(differences.values()):.2e}"
    )
    assert max(differences.values()) < 1e-5, differences
    assert one["return_rms"]["count"] == two["return_rms"]["count"] and one["version"] == two["version"] == 3
    for a, b in zip(one_reports, two_reports):
        for tag in LOSSES:
            assert b.scalars[tag] == pytest.approx(a.scalars[tag], rel=1e-3, abs=1e-6), tag
        # The group's first-minibatch ratio is the max over the ranks: 1 on every rank.
        assert b.scalars["losses/first_minibatch_ratio_dev"] < 1e-5


def test_configs_the_learners_cannot_run_are_one_line(local_ray, tmp_path):
    with pytest.raises(
        UserError, match=r"workers\.num_workers \(3\) must be a multiple of learner\.num_learners \(2\)"
    ):
        load_config({"execution": "ray", "workers": {"num_workers": 3}, "learner": {"num_learners": 2}})
    with pytest.raises(ClusterTooSmall, match=r"asks 8 CPUs \(workers.num_workers=4 x workers.num_cpus=1 \+ "
                       r"learner.num_learners=4 x learner.num_cpus=1\) and the cluster has 4"):  # fmt: skip
        train(learners(4, workers={"num_workers": 4}), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_rank_killed_mid_run_is_rebuilt_with_its_group_and_every_step_trained_once(local_ray, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = learners(2, env=SLOW_ENV, ppo={"total_steps": 1536, "update_epochs": 8})
    killer = kill_learner_when(lambda: any(run_dir.glob("events.out.tfevents.*")), delay_s=1.0, one=True)
    summary = train(config, run_dir=run_dir)
    killer.join(timeout=5)
    out = capsys.readouterr().out
    assert "the learner died (" in out and "rebuilding it from its state after the last update" in out, out
    with capsys.disabled():
        print("\n" + next(line for line in out.splitlines() if "the learner died" in line))
    assert summary["env_steps"] == 1536 and summary["learner_restarts"] == 1
    assert tensorboard_steps(run_dir) == list(range(64, 1537, 64))
    state = load_checkpoint(run_dir)[1]["runtime"]["learner"]
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {24 * 8 * 2}  # each update once


def test_a_rank_dying_past_the_limit_stops_in_bounded_time_with_one_line(local_ray, tmp_path):
    run_dir = tmp_path / "run"
    config = learners(2, env=SLOW_ENV, ppo={"total_steps": 100_000}, learner={"max_restarts": 0})
    kill_learner_when(lambda: any(run_dir.glob("events.out.tfevents.*")), delay_s=1.0, one=True)
    start = time.monotonic()
    with pytest.raises(LearnerFailedError, match=r"^the learner died \(.*learner\.max_restarts=0 rebuilds used up"):
        train(config, run_dir=run_dir)
    assert time.monotonic() - start < 60
    deadline = time.monotonic() + 15
    while learner_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not learner_processes()  # no rank left behind


def test_a_resume_may_change_the_number_of_learners(local_ray, tmp_path):
    run_dir = tmp_path / "run"
    train(learners(1, ppo={"total_steps": 2 * 64}), run_dir=run_dir)
    summary = train(resume=run_dir, overrides=["learner.num_learners=2", "ppo.total_steps=256"])
    assert summary["iterations"] == 4  # one learner's state, loaded into every rank of two
