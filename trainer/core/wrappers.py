"""The two Atari wrappers gymnasium lacks, as CleanRL's ppo_atari.py uses them.

`EpisodicLife`: a lost life ends the training episode (terminated) while the game goes on; the
next reset only steps the game, unless the game itself was over. `FireReset`: press FIRE after
each reset in games that wait for it. Scores over whole games are recorded below these wrappers
(see envs.py), so they stay the raw game score.
"""

from __future__ import annotations

import gymnasium as gym


def _lives(env: gym.Env) -> int:
    return int(env.unwrapped.ale.lives())


class EpisodicLife(gym.Wrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = _lives(self.env)
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # a life was lost: carry on from the current frame with a no-op
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = _lives(self.env)
        return obs, info


class FireReset(gym.Wrapper):
    """Take FIRE (action 1) and then action 2 after every reset, as the games that need it expect."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        if len(meanings) < 3 or meanings[1] != "FIRE":
            raise ValueError(f"FireReset needs a game whose action 1 is FIRE, got actions {meanings}")

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                self.env.reset(**kwargs)
        return obs, info
