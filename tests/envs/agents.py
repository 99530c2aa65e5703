"""Small PettingZoo Parallel envs for the multi-agent tests.

`CueMatch`: every agent sees a cue (one of `choices`, one-hot, in an observation of `sizes[i]`
numbers) and earns 1 for taking the action it names, 0 otherwise. Agent i's episode lasts
`lengths[i]` of its steps and it joins at env step `join_at[i]`: agents that finish early and
agents that join later; the env's episode ends when every agent has. `truncate`: agents end by
truncation instead of termination. `fixed`: cue = (agent's step + its index) % choices, the
same in every episode whatever the seed (for exact-resume tests). `continuous`: the action is a
number in [-1, 1] and earns 1 - its distance to the cue's point (cue c of n at -1 + 2c / (n - 1));
one outside the space is refused, as a real simulator's may be. `spoil_at`: at that env step the
last agent's reward (`spoil: reward`) or observation (`spoil: observation`) is NaN.

`SpeakerListener`: a cooperative pair with different spaces. The speaker sees a target (one-hot
of 3) and says one of 3 words; the listener sees the speaker's last word (one-hot) and a
constant, and must pick the target the speaker saw one step before. Both earn 1 when it does.
`step_sleep_s`: each step waits that long (a slow simulator, for the fault tests).

`Counting`: a turn-based (AEC) game of two players that never ends by itself; each move earns its
mover the number it says (0 or 1) at once, while the other player waits.
"""

from __future__ import annotations

import time

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv


class CueMatch(ParallelEnv):
    metadata = {"name": "cue_match_v0"}  # noqa: RUF012 - PettingZoo's convention

    def __init__(
        self,
        num_agents: int = 2,
        lengths: list[int] | None = None,
        join_at: list[int] | None = None,
        sizes: list[int] | None = None,
        choices: int = 2,
        truncate: bool = False,
        prefix: str = "runner",
        fixed: bool = False,
        continuous: bool = False,
        spoil_at: int | None = None,
        spoil: str = "reward",
    ) -> None:
        self.possible_agents = [f"{prefix}_{i}" for i in range(num_agents)]
        self.lengths = dict(zip(self.possible_agents, lengths or [10] * num_agents))
        self.join_at = dict(zip(self.possible_agents, join_at or [0] * num_agents))
        self.sizes = dict(zip(self.possible_agents, sizes or [choices] * num_agents))
        self.choices, self.truncate, self.fixed, self.continuous = choices, truncate, fixed, continuous
        self.spoil_at, self.spoil = spoil_at, spoil
        self.rng = np.random.default_rng()

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (self.sizes[agent],), np.float32)

    def action_space(self, agent):
        return spaces.Box(-1.0, 1.0, (1,), np.float32) if self.continuous else spaces.Discrete(self.choices)

    def _reward(self, agent, action) -> float:
        if not self.continuous:
            return float(action == self.cues[agent])
        if not self.action_space(agent).contains(np.asarray(action, np.float32)):
            raise ValueError(f"{agent}: action {action} outside [-1, 1]")
        return 1.0 - abs(float(action[0]) - (-1.0 + 2.0 * self.cues[agent] / (self.choices - 1)))

    def _cue(self, agent) -> int:
        if self.fixed:
            return (self.steps[agent] + self.possible_agents.index(agent)) % self.choices
        return int(self.rng.integers(self.choices))

    def _observe(self, agent) -> np.ndarray:
        obs = np.zeros(self.sizes[agent], np.float32)
        obs[self.cues[agent]] = 1.0
        return obs

    def _arrivals(self) -> None:
        for agent in self.possible_agents:
            if self.join_at[agent] == self.t and agent not in self.done:
                self.agents.append(agent)
                self.steps[agent] = 0
                self.cues[agent] = self._cue(agent)

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.agents, self.steps, self.cues, self.done = 0, [], {}, {}, set()
        self._arrivals()
        return {agent: self._observe(agent) for agent in self.agents}, {agent: {} for agent in self.agents}

    def step(self, actions):
        rewards = {agent: self._reward(agent, actions[agent]) for agent in self.agents}
        terminated, truncated = {}, {}
        for agent in self.agents:
            self.steps[agent] += 1
            ends = self.steps[agent] >= self.lengths[agent]
            terminated[agent], truncated[agent] = ends and not self.truncate, ends and self.truncate
            self.cues[agent] = self._cue(agent)
        obs = {agent: self._observe(agent) for agent in self.agents}
        if self.t + 1 == self.spoil_at:
            spoiled = self.agents[-1]
            if self.spoil == "observation":
                obs[spoiled] = np.full_like(obs[spoiled], np.nan)
            else:
                rewards[spoiled] = float("nan")
        infos = {agent: {} for agent in self.agents}
        self.done |= {agent for agent in self.agents if terminated[agent] or truncated[agent]}
        self.agents = [agent for agent in self.agents if agent not in self.done]
        self.t += 1
        waiting = [a for a in self.possible_agents if a not in self.done and a not in self.agents]
        if not self.agents and waiting:  # nobody here yet: the next one arrives now
            self.t = min(self.join_at[a] for a in waiting)
        self._arrivals()
        for agent in self.agents:
            if agent not in obs:  # joined now: its first observation
                obs[agent], infos[agent] = self._observe(agent), {}
                rewards[agent], terminated[agent], truncated[agent] = 0.0, False, False
        return obs, rewards, terminated, truncated, infos


class SpeakerListener(ParallelEnv):
    metadata = {"name": "speaker_listener_v0"}  # noqa: RUF012 - PettingZoo's convention

    def __init__(self, length: int = 20, step_sleep_s: float = 0.0) -> None:
        self.possible_agents = ["speaker_0", "listener_0"]
        self.length, self.step_sleep_s = length, step_sleep_s
        self.rng = np.random.default_rng()

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (3,) if agent == "speaker_0" else (4,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(3)

    def _obs(self) -> dict:
        speaker = np.eye(3, dtype=np.float32)[self.target]
        listener = np.concatenate([np.eye(3, dtype=np.float32)[self.word], [1.0]]).astype(np.float32)
        return {"speaker_0": speaker, "listener_0": listener}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.t, self.target, self.word, self.heard_target = 0, int(self.rng.integers(3)), 0, 0
        return self._obs(), {agent: {} for agent in self.agents}

    def step(self, actions):
        time.sleep(self.step_sleep_s)
        reward = float(actions["listener_0"] == self.heard_target)
        self.heard_target, self.word = self.target, int(actions["speaker_0"])
        self.target = int(self.rng.integers(3))
        self.t += 1
        ends = self.t >= self.length
        obs = self._obs()
        rewards = dict.fromkeys(self.agents, reward)
        terminated = dict.fromkeys(self.agents, False)
        truncated = dict.fromkeys(self.agents, ends)
        if ends:
            self.agents = []
        return obs, rewards, terminated, truncated, {agent: {} for agent in obs}


class Counting(AECEnv):
    metadata = {"name": "counting_v0"}  # noqa: RUF012 - PettingZoo's convention

    def __init__(self) -> None:
        super().__init__()
        self.possible_agents = ["first_0", "second_0"]

    def observation_space(self, agent):
        return spaces.Box(0.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def observe(self, agent):
        return np.eye(2, dtype=np.float32)[self.possible_agents.index(agent)]

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {agent: {} for agent in self.agents}
        self.agent_selection = self.agents[0]

    def step(self, action):
        mover = self.agent_selection
        self._cumulative_rewards[mover] = 0.0
        self.rewards = dict.fromkeys(self.agents, 0.0) | {mover: float(action)}
        self._accumulate_rewards()
        self.agent_selection = self.agents[1 - self.agents.index(mover)]
