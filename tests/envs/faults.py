"""Envs for the Ray fault tests, loaded by workers through `tests.envs.faults:Class` entry points."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import gymnasium as gym


def claim(flag: Path) -> bool:
    """Create `flag` atomically: True for exactly one caller across all worker processes."""
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


class SlowCartPole(gym.Wrapper):
    """CartPole whose step takes `step_sleep_s`, so a collection lasts long enough to be hit."""

    def __init__(self, step_sleep_s: float = 0.002) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.step_sleep_s = step_sleep_s

    def step(self, action):
        time.sleep(self.step_sleep_s)
        return self.env.step(action)


class HangOnceCartPole(gym.Wrapper):
    """Hangs forever on step `hang_at_step` unless `flag_file` exists, and creates it first: the
    first worker to get there hangs, its replacement does not."""

    def __init__(self, flag_file: str, hang_at_step: int = 50) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.flag = Path(flag_file)
        self.hang_at_step = hang_at_step
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.hang_at_step and claim(self.flag):
            while True:
                time.sleep(1)
        return self.env.step(action)


class DieOnceCartPole(gym.Wrapper):
    """SIGKILLs its own process on step `die_at_step` unless `flag_file` exists (it creates it
    first): a worker process that dies mid-collection, once."""

    def __init__(self, flag_file: str, die_at_step: int = 40) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.flag = Path(flag_file)
        self.die_at_step = die_at_step
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.die_at_step and claim(self.flag):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.env.step(action)


class BrokenCartPole(gym.Wrapper):
    """Raises from its own step after `fail_at_step` steps, like a simulator that crashes."""

    def __init__(self, fail_at_step: int = 20) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.fail_at_step = fail_at_step
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps >= self.fail_at_step:
            raise RuntimeError("simulator exploded")
        return self.env.step(action)


class MemoryHogCartPole(gym.Wrapper):
    """On step `at_step`, unless `flag_file` exists (it creates it first), takes `hog_gb` GB of
    memory and keeps it: the first worker to get there grows until Ray's out-of-memory killer
    takes it, its replacement does not."""

    def __init__(self, flag_file: str, hog_gb: float, at_step: int = 20) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.flag, self.hog_gb, self.at_step = Path(flag_file), hog_gb, at_step
        self.steps, self.hog = 0, []

    def step(self, action):
        self.steps += 1
        if self.steps == self.at_step and claim(self.flag):
            for _ in range(int(self.hog_gb * 8)):  # 128 MiB at a time, each page touched
                self.hog.append(bytearray(b"x") * (128 << 20))
                time.sleep(0.05)
            time.sleep(30)  # held until the killer comes
        return self.env.step(action)
