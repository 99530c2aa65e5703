"""What a runtime reports to the session: after one iteration, and the learner's state for evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.core.messages import EpisodeStats


@dataclass
class IterationStats:
    """What a runtime reports to the driver after one iteration. `policy_lag`: how many versions
    the rollouts' policy was behind the one they updated (the runtime's choice: 1 where workers
    collect during updates). The restart counts are this runtime's so far."""

    metrics: dict[str, float]
    episodes: EpisodeStats
    worker_timings: list[dict[str, float]]
    policy_lag: int = 0
    worker_restarts: list[int] = field(default_factory=list)
    learner_restarts: int = 0


@dataclass(frozen=True)
class LearnerState:
    """The learner's state after an update, in two parts: `weights` (the policy with its
    normalizer stats, the counters: what acting needs) travels every iteration; `optimizer` (Adam's
    moments, two thirds of the bytes) stays where it was made until a checkpoint asks for it. Each
    is a dict in-process, an object-store reference under Ray."""

    weights: object
    optimizer: object
