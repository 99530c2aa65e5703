"""The one acting loop: a policy stepping a batch of envs.

Rollout workers, evaluation (during training and `trainer evaluate`) and `Policy.predict` all act
through `Acting` and count episodes with `finished_episodes`, so the recurrent state's start,
its reset at episode starts, action conversion and clipping cannot differ between them.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from trainer.core.messages import EpisodeStats


class Acting:
    """A policy's state over a batch of B envs: the recurrent state and which env's next
    observation starts an episode. `act` takes one step; `ended` marks the envs whose episode
    ended, so their state is zeroed right before their next observation."""

    def __init__(self, policy, action_space: spaces.Space, num_envs: int) -> None:
        self.policy, self.action_space = policy, action_space
        self.start(num_envs)

    def start(self, num_envs: int) -> None:
        """Every env at an episode start, with the policy's initial (zero) state."""
        self.hidden = self.policy.initial_hidden(num_envs)
        self.first = torch.ones(num_envs, dtype=torch.bool)

    @torch.inference_mode()
    def act(
        self,
        obs: dict[str, torch.Tensor],
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Observation leaves `[B, ...]` -> stored action `[B, A]`, logprob `[B]`, value `[B]`;
        the recurrent state moves on."""
        action, logprob, value, self.hidden = self.policy.act(
            obs, self.hidden, self.first, deterministic=deterministic, generator=generator
        )
        return action, logprob, value

    def ended(self, done: np.ndarray | torch.Tensor) -> None:
        self.first = torch.as_tensor(done, dtype=torch.bool)

    def env_actions(self, action: torch.Tensor) -> np.ndarray:
        """Stored actions `[B, A]` -> what a vector env steps with: indices shifted to the
        space's start, Box actions clipped to its bounds (the stored ones stay unclipped, so
        their log-probs are the sampled ones')."""
        return to_env_actions(action.numpy(), self.action_space)


def to_env_actions(actions: np.ndarray, space: spaces.Space) -> np.ndarray:
    """Stored actions `[B, A]` -> the env's: Discrete `[B]`, MultiDiscrete `[B, A]` (both from
    the space's start), Box `[B, *shape]` clipped to the space."""
    if isinstance(space, spaces.Discrete):
        return actions[:, 0] + int(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return actions + space.start
    if isinstance(space, spaces.Box):
        return np.clip(actions.reshape(len(actions), *space.shape), space.low, space.high)
    return actions


def finished_episodes(info: dict, episodes: EpisodeStats | None = None) -> list[tuple[int, float, int]]:
    """(env index, return, length) of each env episode that ended this vector step, as
    RecordEpisodeStatistics counted it (whole games, whatever wrappers end training episodes
    sooner); also appended to `episodes` when given."""
    final = info.get("final_info", {})
    if "episode" not in final:
        return []
    ended = [
        (int(i), float(final["episode"]["r"][i]), int(final["episode"]["l"][i]))
        for i in np.flatnonzero(final["_episode"])
    ]
    if episodes is not None:
        for _, ret, length in ended:
            episodes.returns.append(ret)
            episodes.lengths.append(length)
    return ended
