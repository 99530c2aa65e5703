"""What a runtime reports to the session after one iteration."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.core.messages import EpisodeStats


@dataclass
class IterationStats:
    """What a runtime reports to the driver after one iteration."""

    metrics: dict[str, float]
    episodes: EpisodeStats
    worker_timings: list[dict[str, float]]
    restarts: int = 0
