"""An env with action masks in each of the three places envs keep them, for the masking tests.

Each step only `legal` of each component's actions are allowed, drawn afresh, and one action is
the good one, shown one-hot in the observation (reward 1; another legal action 0). `strict`:
an illegal action raises, so a run that finishes never sent one. Else it ends the episode
with reward -1; with `good_always_legal=False` the good action is drawn from all actions, so
half the time (legal = half) taking it ends the episode: a policy that sees no mask cannot
know when, a masked one never takes it then. `cue_every=k`: the good action stays for k steps
and is shown only on the first of them: a task for memory and masks together.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class IllegalActionError(RuntimeError):
    pass


class MaskedChoice(gym.Env):
    def __init__(
        self,
        source: str = "info",
        nvec: tuple[int, ...] = (6,),
        legal: int = 3,
        length: int = 20,
        strict: bool = True,
        key: str = "action_mask",
        empty_at_step: int | None = None,
        mask_size: int | None = None,
        good_always_legal: bool = True,
        cue_every: int = 1,
        image: bool = False,
    ) -> None:
        self.source, self.nvec, self.legal, self.length = source, list(nvec), legal, length
        self.strict, self.key, self.good_always_legal, self.cue_every = strict, key, good_always_legal, cue_every
        self.image = image  # the cue as a 10x10 uint8 frame (a pixel per action) instead of a vector
        self.empty_at_step, self.mask_size = empty_at_step, mask_size  # faults: an empty mask, a mask of another size
        size = sum(self.nvec)
        self.action_space = spaces.Discrete(self.nvec[0]) if len(self.nvec) == 1 else spaces.MultiDiscrete(self.nvec)
        view = spaces.Box(0, 255, (1, 10, 10), np.uint8) if image else spaces.Box(0.0, 1.0, (size,), np.float32)
        if source == "observation":
            self.observation_space = spaces.Dict({"obs": view, key: spaces.MultiBinary(mask_size or size)})
        else:
            self.observation_space = view
        self.t = 0
        if source == "method":  # sb3-contrib's convention; the other sources have no such method
            self.action_masks = self._mask_given

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self._obs(), self._info()

    def step(self, action):
        actions = np.atleast_1d(np.asarray(action))
        parts = np.split(self.mask, np.cumsum(self.nvec)[:-1])
        if not all(part[a] for part, a in zip(parts, actions, strict=True)):
            if self.strict:
                raise IllegalActionError(f"illegal action {actions.tolist()} at step {self.t}")
            return self._obs(), -1.0, True, False, self._info()
        reward = float(all(a == g for a, g in zip(actions, self.good, strict=True)))
        self.t += 1
        self._draw()
        return self._obs(), reward, False, self.t >= self.length, self._info()

    def _draw(self) -> None:
        masks, good = [], []
        for n in self.nvec:
            allowed = self.np_random.choice(n, size=self.legal, replace=False)
            mask = np.zeros(n, dtype=bool)
            mask[allowed] = True
            masks.append(mask)
            good.append(int(allowed[0]) if self.good_always_legal else int(self.np_random.integers(n)))
        self.mask = np.concatenate(masks)
        if self.t % self.cue_every == 0:
            self.good = good

    def _mask_given(self) -> np.ndarray:
        if self.empty_at_step is not None and self.t >= self.empty_at_step:
            return np.zeros(sum(self.nvec), dtype=np.int8)
        if self.mask_size is not None:
            return np.ones(self.mask_size, dtype=np.int8)
        return self.mask.astype(np.int8)

    def _obs(self):
        view = np.zeros(sum(self.nvec), dtype=np.float32)
        if self.t % self.cue_every == 0:
            view[np.cumsum([0, *self.nvec[:-1]]) + np.asarray(self.good)] = 1.0
        if self.image:
            frame = np.zeros((1, 10, 10), dtype=np.uint8)
            frame[0, 0, : view.size] = view * 255
            view = frame
        return {"obs": view, self.key: self._mask_given()} if self.source == "observation" else view

    def _info(self) -> dict:
        return {self.key: self._mask_given()} if self.source == "info" else {}
