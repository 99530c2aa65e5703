"""Evaluation during training and the session's callbacks: eval/* scalars at the env steps of
the weights they evaluated, the same returns as `trainer evaluate` on those weights, best.pt
following the eval return, videos, evaluation beside training under Ray, a callback that
stops the run cleanly, and a user's callback doing through its SessionView what evaluation does."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import trainer
from tests.conftest import make_small_config
from trainer import Callback
from trainer.evaluate import evaluate
from trainer.inference import load_policy
from trainer.runtime.callbacks import fetch
from trainer.runtime.checkpoint import BEST, CHECKPOINT_DIR, load_checkpoint

STEPS_PER_ITERATION = 64  # the small config: 16 steps x 2 workers x 2 envs


class StopAt(Callback):
    """Records every report and stops the run at an iteration."""

    def __init__(self, iteration: int) -> None:
        self.iteration, self.reports = iteration, []

    def on_iteration(self, report):
        self.reports.append(report)
        return report.iteration >= self.iteration


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> tuple[Path, dict, StopAt]:
    run = tmp_path_factory.mktemp("eval") / "run"
    config = make_small_config(
        eval={"every": 2, "episodes": 3, "num_envs": 2, "video_every": 2},
        ppo={"total_steps": 16 * STEPS_PER_ITERATION},
        checkpoint={"every": 2, "keep_last": 10},
    )
    stopper = StopAt(8)
    summary = trainer.train(config, run_dir=run, callbacks=[stopper])
    return run, summary, stopper


def _scalars(run: Path, tag: str) -> dict[int, float]:
    accumulator = EventAccumulator(str(run), size_guidance={"images": 0})
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def test_eval_scalars_are_logged_at_the_steps_of_the_weights_they_evaluated(evaluated_run):
    run, _, stopper = evaluated_run
    returns = _scalars(run, "eval/return_mean")
    assert sorted(returns) == [2 * STEPS_PER_ITERATION * k for k in (1, 2, 3, 4)]
    iterations = _scalars(run, "eval/policy_iteration")
    assert all(iterations[step] * STEPS_PER_ITERATION == step for step in returns)
    assert set(_scalars(run, "eval/stochastic_return_mean")) == set(returns)
    # Callbacks see the same values in the report of the iteration they arrived at.
    reported = {int(r.scalars["eval/env_step"]): r.scalars["eval/return_mean"] for r in stopper.reports
                if "eval/return_mean" in r.scalars}  # fmt: skip
    assert reported == pytest.approx(returns)


def test_trainer_evaluate_gives_the_returns_evaluation_logged_for_the_same_weights(evaluated_run):
    run, _, _ = evaluated_run
    logged = _scalars(run, "eval/return_mean")
    for iteration in (4, 6):
        checkpoint = run / "checkpoints" / f"iter_{iteration:07d}.pt"
        assert evaluate(checkpoint)["mean_return"] == pytest.approx(logged[iteration * STEPS_PER_ITERATION])


def test_best_checkpoint_holds_the_weights_of_the_best_eval_return(evaluated_run):
    run, summary, _ = evaluated_run
    logged = _scalars(run, "eval/return_mean")
    assert summary["best_eval_return"] == pytest.approx(max(logged.values()))
    _, best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["env_steps"] == summary["best_eval_step"] == max(logged, key=logged.get)
    assert evaluate(run / "checkpoints" / "best.pt")["mean_return"] == pytest.approx(summary["best_eval_return"])


def test_every_second_evaluation_records_a_video_in_the_run_and_in_tensorboard(evaluated_run):
    run, _, _ = evaluated_run
    videos = sorted(p.name for p in (run / "videos").iterdir())
    assert videos == ["eval_step_000000128.mp4", "eval_step_000000384.mp4"]
    assert all((run / "videos" / name).read_bytes()[4:8] == b"ftyp" for name in videos)  # an MP4 container
    accumulator = EventAccumulator(str(run), size_guidance={"images": 0})
    accumulator.Reload()
    images = accumulator.Images("eval/video")
    assert [image.step for image in images] == [128, 384]
    assert images[0].encoded_image_string[:6] == b"GIF89a" and images[0].width == 600


def test_a_callback_that_stops_the_run_leaves_a_final_checkpoint_and_summary(evaluated_run):
    run, summary, stopper = evaluated_run
    assert summary["interrupted_by"] == "callback StopAt" and summary["iterations"] == 8
    assert [r.iteration for r in stopper.reports] == list(range(1, 9))
    assert stopper.reports[-1].scalars["losses/policy"] == pytest.approx(_scalars(run, "losses/policy")[512])
    policy = load_policy(run)
    assert policy.iteration == 8
    action, state = policy.predict(policy.observation_space.sample())
    assert policy.action_space.contains(action) and state is None


def test_plain_functions_are_callbacks_too(tmp_path):
    seen = []
    config = make_small_config(ppo={"total_steps": 3 * STEPS_PER_ITERATION}, logging={"tensorboard": False})
    summary = trainer.train(config, run_dir=tmp_path / "run", callbacks=[lambda report: seen.append(report.env_steps)])
    assert seen == [64, 128, 192] and summary["interrupted_by"] is None


class LowestValueLoss(Callback):
    """A user's callback: a scalar of its own, best.pt by its own measure, its state kept across a
    resume, a field in summary.json: all through the public SessionView."""

    name = "lowest_value_loss"
    saves_best = True

    def __init__(self) -> None:
        self.best, self.best_iteration, self.started_with, self.kept = math.inf, None, None, None

    def on_start(self, session) -> None:
        self.session, self.started_with = session, self.best

    def on_iteration(self, report):
        loss = report.scalars["losses/value"]
        self.session.write_scalars({"custom/twice_value_loss": 2 * loss}, report.env_steps)
        if loss < self.best:
            self.best, self.best_iteration = loss, report.iteration
            weights = self.session.policy_weights()
            self.kept = {k: v.clone() for k, v in fetch(weights.learner.weights)["policy"].items()}
            self.session.save_best(weights)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_iteration": self.best_iteration}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_iteration = state["best"], state["best_iteration"]

    def summary(self) -> dict:
        return {"lowest_value_loss": self.best}


@pytest.mark.parametrize("execution", ["inline", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_users_callback_writes_scalars_keeps_best_weights_and_its_state(request, tmp_path, execution):
    if execution == "ray":
        request.getfixturevalue("local_ray")
    run = tmp_path / "run"
    config = make_small_config(execution=execution, ppo={"total_steps": 6 * STEPS_PER_ITERATION})
    first = LowestValueLoss()
    summary = trainer.train(config, run_dir=run, callbacks=[first])
    twice, losses = _scalars(run, "custom/twice_value_loss"), _scalars(run, "losses/value")
    assert sorted(twice) == [STEPS_PER_ITERATION * i for i in range(1, 7)]
    assert all(twice[step] == pytest.approx(2 * losses[step], rel=1e-6) for step in twice)
    assert summary["lowest_value_loss"] == first.best == pytest.approx(min(losses.values()), rel=1e-6)
    _, best = load_checkpoint(run / CHECKPOINT_DIR / BEST)
    assert best["iteration"] == first.best_iteration and best["env_steps"] == first.best_iteration * STEPS_PER_ITERATION
    assert all(torch.equal(best["runtime"]["learner"]["policy"][k], v) for k, v in first.kept.items())
    assert "exp_avg" in next(iter(best["runtime"]["learner"]["optimizer"]["state"].values()))  # resumable
    assert load_checkpoint(run)[1]["callbacks"]["lowest_value_loss"] == first.state_dict()

    again = LowestValueLoss()
    trainer.train(config, overrides=["ppo.total_steps=512"], resume=run, callbacks=[again])
    assert again.started_with == first.best  # its state came back with the checkpoint


@pytest.mark.ray
def test_under_ray_evaluation_runs_beside_training(local_ray, tmp_path):
    """An evaluation that takes longer than an iteration arrives some iterations later, logged at
    the step of its weights; training never waited for it. Its env sleeps 50 ms a step for at
    most 10 steps an episode (0.4-1 s an evaluation), the training env 2 ms (~0.1 s an
    iteration, 40 of them)."""
    stopper = StopAt(10**6)
    slow = {"id": "tests.envs.faults:SlowCartPole", "kwargs": {"step_sleep_s": 0.05}, "max_episode_steps": 10}
    config = make_small_config(
        execution="ray",
        env={"id": "tests.envs.faults:SlowCartPole", "kwargs": {"step_sleep_s": 0.002}},
        eval={"every": 1, "episodes": 2, "deterministic": False, "env": slow},
        ppo={"total_steps": 40 * STEPS_PER_ITERATION},
    )
    summary = trainer.train(config, run_dir=tmp_path / "run", callbacks=[stopper])
    assert summary["iterations"] == 40
    arrived = [(r.env_steps, int(r.scalars["eval/env_step"])) for r in stopper.reports if "eval/env_step" in r.scalars]
    assert arrived and any(step < now for now, step in arrived), arrived
    returns = _scalars(tmp_path / "run", "eval/return_mean")
    assert all(step % STEPS_PER_ITERATION == 0 for step in returns)
    skipped = stopper.reports[-1].scalars["eval/skipped"]
    assert skipped > 0 and skipped + len(returns) == 40  # one was due at every iteration
