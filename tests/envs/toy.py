"""Deterministic toy envs for tests, loaded as entry points (`tests.envs.toy:StepCounterEnv`)."""

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


class PixelSideEnv(gym.Env):
    """An image task only a working image path solves: a bright 2x2 square sits somewhere in a
    10x10 uint8 frame (H, W, 1); action 0 is right when it is in the left half, action 1 when in
    the right half. A right action scores 1 and shows a new frame, a wrong one ends the episode
    (terminated), so the return counts right answers until a time limit truncates the episode.
    With `cue=True` the observation is a Dict {'image', 'cue': Discrete(2)} and the right action
    of Discrete(4) is 2 * side + cue: both keys are needed (either alone is right half the time)."""

    SIZE = 10

    def __init__(self, cue: bool = False) -> None:
        image = spaces.Box(0, 255, (self.SIZE, self.SIZE, 1), dtype=np.uint8)
        self.cue = cue
        self.observation_space = spaces.Dict({"image": image, "cue": spaces.Discrete(2)}) if cue else image
        self.action_space = spaces.Discrete(4 if cue else 2)
        self.answer = 0

    def _obs(self):
        row, col = self.np_random.integers(0, self.SIZE - 1, size=2)
        frame = np.zeros((self.SIZE, self.SIZE, 1), dtype=np.uint8)
        frame[row : row + 2, col : col + 2] = 255
        side = int(col + 1 >= self.SIZE // 2)
        if not self.cue:
            self.answer = side
            return frame
        cue = int(self.np_random.integers(0, 2))
        self.answer = 2 * side + cue
        return {"image": frame, "cue": cue}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        right = int(action) == self.answer
        return self._obs(), float(right), not right, False, {}
