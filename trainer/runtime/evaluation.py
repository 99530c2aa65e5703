"""Evaluation during training (`eval.every`), as a session callback.

Every eval.every iterations the newest learner state (the weights the iteration's update made,
with their frozen preprocessing) goes to an evaluation worker: under Ray an actor of its own, so
training goes on while it runs episodes and its result is picked up at a later iteration; inline,
in this process between iterations. Results are logged at the env step those weights were
trained to (not the step at which they arrived), and the log line names that iteration. When an
evaluation is still running as the next one falls due, that one is skipped (eval/skipped). With
evaluation on, best.pt holds the weights of the best eval/return_mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ray

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.video import check_renders
from trainer.runtime.actors import ACTOR_LOST, kill_quietly, unwrap_user_errors, wait_started
from trainer.runtime.callbacks import Callback, IterationReport, PolicyWeights, SessionView
from workers.evaluation_worker import EvalOutcome, EvaluationWorker
from workers.ray_worker import EvaluationActor

VIDEO_DIR = "videos"
FINAL_WAIT_S = 600.0  # how long the end of a run waits for the evaluation still running


@dataclass
class Submitted:
    """An evaluation on its way: of which weights, recording a video or not."""

    weights: PolicyWeights
    record: bool
    result: object = None  # the EvalOutcome (inline) or its reference (Ray)


def _rates(scalars: dict[str, float]) -> str:
    """A self-play evaluation's results against its opponent."""
    words = (("won", "win"), ("drew", "draw"), ("lost", "loss"))
    return ", " + ", ".join(f"{word} {scalars[f'eval/{rate}_rate']:.0%}" for word, rate in words)


def check_video(config: Config, agents: bool = False) -> None:
    """With eval.video_every, the eval env (`agents`: a PettingZoo env) must render frames to
    record: refused before training starts, in one line, rather than at the first recorded evaluation."""
    if config.eval.every and config.eval.video_every:
        check_renders(config.eval_env, "set eval.video_every: 0", agents)


class Evaluation(Callback):
    """An ordinary callback: all it uses of the session is its SessionView."""

    name = "evaluation"
    saves_best = True

    def __init__(self, config: Config, probe: Probe, log) -> None:
        self.config, self.settings, self.probe, self.log = config, config.eval, probe, log
        self.remote = config.execution == "ray"
        self.worker = None
        self.pending: Submitted | None = None
        self.submitted = self.skipped = 0
        self.best_return, self.best_step, self.last_return = -math.inf, None, None

    def state_dict(self) -> dict:
        return {"submitted": self.submitted, "best_return": self.best_return, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.submitted, self.best_return, self.best_step = state["submitted"], state["best_return"], state["best_step"]

    def on_start(self, session: SessionView) -> None:
        self.session = session
        self.worker = self._spawn()

    def _spawn(self):
        if not self.remote:
            return EvaluationWorker(self.config, self.probe)
        actor = ray.remote(EvaluationActor).options(num_cpus=self.settings.num_cpus, max_restarts=0)
        actor = actor.remote(self.config, self.probe)
        wait_started([actor], self.config.workers.sample_timeout_s)  # not counted against the first evaluation
        return actor

    def on_iteration(self, report: IterationReport) -> None:
        scalars = self._collect(wait_s=0.0)
        if report.iteration % self.settings.every == 0:
            if self.pending is None:
                self._submit(report)
                if not self.remote:
                    scalars |= self._collect(wait_s=None)
            else:
                self.skipped += 1
                if self.skipped == 1:
                    self.log(
                        f"evaluation of iteration {self.pending.weights.iteration} still runs at iteration "
                        f"{report.iteration}; "
                        "skipping this one (an evaluation takes longer than eval.every iterations)"
                    )
        scalars["eval/skipped"] = float(self.skipped)
        report.scalars.update(scalars)

    def _submit(self, report: IterationReport) -> None:
        record = bool(self.settings.video_every) and self.submitted % self.settings.video_every == 0
        job = Submitted(self.session.policy_weights(), record)
        evaluate = self.worker.evaluate.remote if self.remote else self.worker.evaluate
        job.result = evaluate(job.weights.learner.weights, record)
        self.pending = job
        self.submitted += 1

    def _collect(self, wait_s: float | None) -> dict[str, float]:
        """The pending evaluation's scalars once it has finished (waiting up to `wait_s`), else {}."""
        job = self.pending
        if job is None:
            return {}
        outcome = job.result
        if self.remote:
            if not ray.wait([job.result], timeout=wait_s)[0]:
                return {}
            try:
                with unwrap_user_errors():
                    outcome = ray.get(job.result)
            except ACTOR_LOST as exc:
                self.pending = None
                self.log(f"the evaluation actor died ({type(exc).__name__}); the next evaluation starts a new one")
                self.worker = self._spawn()
                return {}
        self.pending = None
        return self._finish(job, outcome)

    def _finish(self, job: Submitted, outcome: EvalOutcome) -> dict[str, float]:
        """Log an evaluation at the env step of its weights; keep them as best.pt if they beat
        the best so far."""
        session, iteration, env_steps = self.session, job.weights.iteration, job.weights.env_steps
        scalars = {**outcome.scalars, "eval/policy_iteration": float(iteration)}
        session.write_scalars(scalars, env_steps)
        mean = outcome.scalars["eval/return_mean"]
        self.last_return = mean
        if outcome.video_mp4 is not None:
            path = session.path / VIDEO_DIR / f"eval_step_{env_steps:09d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(outcome.video_mp4)
            session.write_animation("eval/video", outcome.video_gif, outcome.frame_shape, env_steps)
        best = mean > self.best_return
        if best:
            self.best_return, self.best_step = mean, env_steps
            session.save_best(job.weights)
        self.log(
            f"eval of the weights after iteration {iteration} (env step {env_steps}): return {mean:.1f} "
            f"+- {outcome.scalars['eval/return_std']:.1f}, length {outcome.scalars['eval/length_mean']:.0f}, "
            f"{len(outcome.returns)} episodes"
            + (_rates(outcome.scalars) if "eval/win_rate" in outcome.scalars else "")
            + (" (best so far: best.pt)" if best else "")
        )
        return {**scalars, "eval/env_step": float(env_steps)}

    def on_end(self, session: SessionView, completed: bool) -> None:
        try:
            if completed and self.pending is not None:
                if not self._collect(wait_s=FINAL_WAIT_S) and self.pending is not None:
                    self.log(
                        f"the last evaluation (iteration {self.pending.weights.iteration}) did not finish; left out"
                    )
        finally:
            if self.remote and self.worker is not None:
                kill_quietly(self.worker)
            self.worker = None

    def summary(self) -> dict:
        best = self.best_return if math.isfinite(self.best_return) else None
        return {"eval_return_last": self.last_return, "best_eval_return": best, "best_eval_step": self.best_step}
