"""Episode bookkeeping for the run summary: the last-20 window, the best mean, when it solved."""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW = 20


class EpisodeTracker:
    def __init__(self, reward_threshold: float | None) -> None:
        self.reward_threshold = reward_threshold
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.episodes = 0
        self.best_mean_return = float("-inf")
        self.solved_at_step: int | None = None

    def add(self, returns: list[float], env_step: int) -> None:
        """Fold in the episodes that finished by `env_step` (the end of an iteration)."""
        self.recent.extend(returns)
        self.episodes += len(returns)
        if len(self.recent) < WINDOW:
            return
        mean = self.mean_return
        self.best_mean_return = max(self.best_mean_return, mean)
        if self.solved_at_step is None and self.reward_threshold is not None and mean >= self.reward_threshold:
            self.solved_at_step = env_step

    def state_dict(self) -> dict:
        return {
            "recent": list(self.recent),
            "episodes": self.episodes,
            "best_mean_return": self.best_mean_return,
            "solved_at_step": self.solved_at_step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(state["recent"])
        self.episodes = state["episodes"]
        self.best_mean_return = state["best_mean_return"]
        self.solved_at_step = state["solved_at_step"]

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.recent)) if self.recent else float("nan")
