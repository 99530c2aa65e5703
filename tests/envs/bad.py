"""Envs that misbehave or have spaces the trainer does not support, for the bad-input tests."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class SpoiledStepCartPole(gym.Wrapper):
    """CartPole whose step `at` of every episode returns what `spoil(obs, reward)` makes of it."""

    def __init__(self, at: int) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.at, self.steps = at, 0

    def reset(self, **kwargs):
        self.steps = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == self.at:
            obs, reward = self.spoil(obs, reward)
        return obs, reward, terminated, truncated, info

    def spoil(self, obs, reward):
        raise NotImplementedError


class NaNCartPole(SpoiledStepCartPole):
    """CartPole whose observation turns NaN on step `nan_at_step` of every episode."""

    def __init__(self, nan_at_step: int = 5) -> None:
        super().__init__(at=nan_at_step)

    def spoil(self, obs, reward):
        return np.full_like(obs, np.nan), reward


class SequenceObservationEnv(gym.Env):
    """A Dict observation with a variable-length part, which cannot be batched."""

    observation_space = spaces.Dict({"x": spaces.Box(-1, 1, (2,)), "path": spaces.Sequence(spaces.Box(0, 1, (2,)))})
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class DriftingObservationEnv(gym.Env):
    """A Dict observation that breaks its space at step `at`: key 'b' disappears (`change: drop`),
    'a' changes shape (`change: shape`) or the image turns float (`change: dtype`)."""

    observation_space = spaces.Dict(
        {"a": spaces.Box(-1, 1, (2,)), "b": spaces.Box(-1, 1, (2,)), "img": spaces.Box(0, 255, (4, 4, 1), np.uint8)}
    )
    action_space = spaces.Discrete(2)

    def __init__(self, change: str = "drop", at: int = 5) -> None:
        self.change, self.at, self.steps = change, at, 0

    def _obs(self) -> dict:
        obs = {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32), "img": np.zeros((4, 4, 1), np.uint8)}
        if self.steps >= self.at:
            if self.change == "drop":
                del obs["b"]
            elif self.change == "shape":
                obs["a"] = np.zeros(3, np.float32)
            else:
                obs["img"] = obs["img"].astype(np.float32)
        return obs

    def reset(self, *, seed=None, options=None):
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        return self._obs(), 0.0, False, False, {}


class TupleActionEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,))
    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3)))

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {}


class FailsInWorkerEnv(gym.Env):
    """Builds in the driver's process (`driver_pid`) but raises in any other on construction
    (`fail_on: make`) or on reset (`fail_on: reset`): an env only a Ray worker cannot run."""

    observation_space = spaces.Box(-1, 1, (2,))
    action_space = spaces.Discrete(2)

    def __init__(self, driver_pid: int, fail_on: str = "make") -> None:
        self.elsewhere = os.getpid() != driver_pid
        self.fail_on = fail_on
        if self.elsewhere and fail_on == "make":
            raise RuntimeError("simulator licence not found")

    def reset(self, *, seed=None, options=None):
        if self.elsewhere and self.fail_on == "reset":
            raise RuntimeError("simulator did not start")
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {}


class WrongResetShapeEnv(gym.Env):
    """Declares 4 floats but its reset returns 3 (its step is fine): a bug outside step()."""

    observation_space = spaces.Box(-1, 1, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, False, False, {}


class RaisingConstructorEnv(gym.Env):
    """Raises from its constructor, as an env with a missing asset or licence does."""

    def __init__(self) -> None:
        raise FileNotFoundError("assets/level1.bin")


class NoRenderModeEnv(gym.Env):
    """A short episode (5 steps) from a constructor that takes no render_mode: it cannot be asked
    for frames."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        return np.zeros(2, np.float32), 1.0, self.steps >= 5, False, {}


class NoFramesEnv(NoRenderModeEnv):
    """Takes render_mode and lists rgb_array, but its render() returns None."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__()
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
        self.render_mode = render_mode

    def render(self):
        return None


class HugeRewardCartPole(SpoiledStepCartPole):
    """CartPole whose reward on step `at` of every episode is 1e300: finite as the float64 the
    vector env keeps, inf as the float32 a rollout stores."""

    def __init__(self, at: int = 5) -> None:
        super().__init__(at=at)

    def spoil(self, obs, reward):
        return obs, 1e300


class HugeObservationEnv(gym.Env):
    """Float64 observations, one of which is -1e300 on step `at` of every episode: finite in float64,
    past float32's range."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = spaces.Discrete(2)

    def __init__(self, at: int = 5) -> None:
        self.at, self.steps = at, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(3), {}

    def step(self, action):
        self.steps += 1
        obs = np.array([0.5, -1e300 if self.steps == self.at else 0.0, 1.0])
        return obs, 1.0, self.steps >= 20, False, {}


class WideObservationEnv(gym.Env):
    """A `side` x `side` float observation: the default MLP on it has side² x 64 weights per head."""

    action_space = spaces.Discrete(2)

    def __init__(self, side: int = 4096) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (side, side), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}
