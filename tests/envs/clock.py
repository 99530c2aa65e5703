"""A deterministic env whose episodes last exactly `length` steps and whose reset ignores the
seed: with `length` equal to rollout_steps, every iteration starts fresh episodes, so a resumed
run sees the same observations as an uninterrupted one."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ClockEnv(gym.Env):
    observation_space = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int = 16) -> None:
        self.length = length
        self.t = 0
        self.position = 0.0

    def _obs(self) -> np.ndarray:
        phase = 2 * np.pi * self.t / self.length
        return np.array([np.sin(phase), np.cos(phase), self.position], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.position = 0, 0.0
        return self._obs(), {}

    def step(self, action):
        target = 1.0 if np.sin(2 * np.pi * self.t / self.length) > 0 else -1.0
        self.position += 0.1 if action == 1 else -0.1
        reward = float(-abs(target - self.position))
        self.t += 1
        return self._obs(), reward, False, self.t >= self.length, {}
