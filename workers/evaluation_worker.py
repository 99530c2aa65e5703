"""The evaluation worker: whole episodes of the eval env with a learner state's policy, whose
frozen preprocessing comes with its weights. A plain class, run in-process (inline mode) or as a
Ray actor beside the rollout workers."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.core.agent_evaluator import AgentEvaluator
from trainer.core.agents import AgentsProbe
from trainer.core.config import Config
from trainer.core.env_making import ensure_registered
from trainer.core.envs import Probe
from trainer.core.episodes import EpisodeResults, run_episodes
from trainer.core.policy import build_policy
from trainer.core.video import gif_bytes, mp4_bytes


@dataclass
class EvalOutcome:
    """One evaluation, as plain data: scalars by TensorBoard tag, and the recorded episode."""

    scalars: dict[str, float]
    returns: list[float]
    video_mp4: bytes | None = None
    video_gif: bytes | None = None
    frame_shape: tuple[int, ...] = field(default=())

    def with_video(self, frames: list, fps: int) -> EvalOutcome:
        """This outcome with the recorded episode as an MP4 (the run's videos/) and a GIF (TensorBoard)."""
        self.video_mp4, self.video_gif = mp4_bytes(frames, fps), gif_bytes(frames, fps)
        self.frame_shape = tuple(frames[0].shape)
        return self


class EvaluationWorker:
    def __init__(self, config: Config, probe: Probe | AgentsProbe) -> None:
        self.config = config
        self.agents = AgentEvaluator(config, probe) if isinstance(probe, AgentsProbe) else None
        if self.agents is not None:
            return
        ensure_registered(config.eval_env, probe.registry_spec)
        self.obs_spec = probe.obs_spec
        self.policy = build_policy(self.obs_spec, probe.action_space, config)
        self.policy.requires_grad_(False)

    def evaluate(self, learner_state: dict, record: bool = False) -> EvalOutcome:
        """Run eval.episodes with the state's weights: the most likely actions (eval/return_*) and,
        or only with eval.deterministic false, sampled ones (eval/stochastic_return_mean). A
        multi-agent run's: see AgentEvaluator."""
        settings = self.config.eval
        if self.agents is not None:
            self.agents.load(learner_state["policies"])
            scalars, returns, filmed = self.agents.evaluate(
                settings.episodes, settings.deterministic, settings.seed, record
            )
            outcome = EvalOutcome({f"eval/{name}": value for name, value in scalars.items()}, returns)
            return outcome.with_video(filmed.frames, filmed.fps) if filmed is not None else outcome
        self.policy.load_state_dict(learner_state["policy"])
        runs: dict[str, EpisodeResults] = {}
        for deterministic in (True, False) if settings.deterministic else (False,):
            runs["deterministic" if deterministic else "stochastic"] = run_episodes(
                self.policy,
                self.obs_spec,
                self.config.eval_env,
                settings.episodes,
                deterministic=deterministic,
                seed=settings.seed,
                num_envs=settings.num_envs,
                record=record and not runs,
            )
        main, *_ = runs.values()
        scalars = {f"eval/{name}": value for name, value in _scalars(main).items()}
        if "stochastic" in runs and main is not runs["stochastic"]:
            scalars["eval/stochastic_return_mean"] = _scalars(runs["stochastic"])["return_mean"]
        outcome = EvalOutcome(scalars, main.returns)
        return outcome.with_video(main.frames, main.fps) if record else outcome


def _scalars(results: EpisodeResults) -> dict[str, float]:
    summary = results.summary()
    return {
        "return_mean": summary["mean_return"],
        "return_std": summary["std_return"],
        "length_mean": summary["mean_length"],
    }
