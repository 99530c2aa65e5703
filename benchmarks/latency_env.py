"""An env whose every step waits a fixed time without using the CPU, as a remote simulator or a
game server would: what bounds a rollout is the wait, not the cores. One process can be made a
straggler: the first to step claims `straggler_file`, and its envs wait `straggler_factor` times
as long."""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class LatencyEnv(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, shape=(8,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(
        self, step_s: float = 0.01, length: int = 200, straggler_file: str | None = None, straggler_factor: float = 2.0
    ) -> None:
        self.step_s, self.length = step_s, length
        self.straggler_file, self.straggler_factor = straggler_file, straggler_factor
        self.wait_s: float | None = None  # decided at the first step (the driver's probe never steps)
        self.t = 0
        self.state = np.zeros(8, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.state = self.np_random.uniform(-1, 1, size=8).astype(np.float32)
        return self.state, {}

    def step(self, action):
        if self.wait_s is None:
            self.wait_s = self.step_s * (self.straggler_factor if self._is_straggler() else 1.0)
        time.sleep(self.wait_s)
        reward = 1.0 if (action == 1) == (self.state[0] > 0) else 0.0
        self.t += 1
        self.state = self.np_random.uniform(-1, 1, size=8).astype(np.float32)
        return self.state, reward, False, self.t >= self.length, {}

    def _is_straggler(self) -> bool:
        if self.straggler_file is None:
            return False
        try:
            with open(self.straggler_file, "x") as claim:
                claim.write(str(os.getpid()))
        except FileExistsError:
            pass
        with open(self.straggler_file) as claim:
            return claim.read().strip() == str(os.getpid())
