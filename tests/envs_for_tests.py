"""Deterministic toy envs for tests, loaded as entry points (`tests.envs_for_tests:StepCounterEnv`)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ACTION_SPACES = {
    "discrete": spaces.Discrete(3, start=-1),
    "multidiscrete": spaces.MultiDiscrete([3, 2], start=[1, -1]),
    "box": spaces.Box(-1.0, 1.0, (2,), dtype=np.float32),
}


class StepCounterEnv(gym.Env):
    """Observation `[k, c, sin(k)]`: k counts steps since reset, c in [-1, 1] is drawn at reset.

    Episodes with c > 0 terminate on the step that makes k == 3; the others run until a time
    limit (e.g. `env.max_episode_steps: 5`) truncates them. So the final observation of an
    episode whose last stored observation is `[k, c, .]` is always `[k + 1, c, sin(k + 1)]`.
    Every action must lie in the action space (with a non-zero `start` for the discrete ones).
    """

    TERMINATE_AT = 3

    def __init__(self, action_space: str = "discrete") -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), dtype=np.float32)
        self.action_space = ACTION_SPACES[action_space]
        self.k = 0
        self.c = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.k, self.c, np.sin(self.k)], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.k = 0
        self.c = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), {}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        self.k += 1
        terminated = self.c > 0 and self.k == self.TERMINATE_AT
        reward = 1.0 - 0.1 * float(np.abs(np.asarray(action, dtype=np.float64)).sum())
        return self._obs(), reward, terminated, False, {}
