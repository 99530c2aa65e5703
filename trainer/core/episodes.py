"""Whole evaluation episodes of a policy, on a vector env of the config's env: the code behind
evaluation during training and `trainer evaluate`, so the two agree for the same weights and seed.

The env's own episodes are counted (a whole Atari game with its raw score, as
RecordEpisodeStatistics sees it below the wrappers). Env i runs (episodes + i) // num_envs of them,
as SB3's evaluate_policy does, so the mean is not biased toward the episodes that end first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.core.acting import Acting, finished_episodes
from trainer.core.config import EnvConfig
from trainer.core.envs import make_vector_env
from trainer.core.spec import ObsSpec
from trainer.core.video import frame_of


@dataclass
class EpisodeResults:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # env 0's first episode, when recorded
    fps: int = 30

    def summary(self) -> dict[str, float]:
        return {
            "mean_return": float(np.mean(self.returns)),
            "std_return": float(np.std(self.returns)),
            "mean_length": float(np.mean(self.lengths)),
            "std_length": float(np.std(self.lengths)),
        }


def run_episodes(
    policy,
    obs_spec: ObsSpec,
    env: EnvConfig,
    episodes: int,
    *,
    deterministic: bool,
    seed: int,
    num_envs: int = 1,
    record: bool = False,
) -> EpisodeResults:
    """Run `episodes` whole episodes of `policy` (an ActorCritic, or anything with its
    `initial_hidden` and `act`); env i is reset once with seed + i, and sampled actions draw
    from a generator seeded with `seed`."""
    num_envs = min(num_envs, episodes)
    envs = make_vector_env(env, num_envs, render_first=record, mask_source=obs_spec.mask_source)
    try:
        acting = Acting(policy, envs.single_action_space, num_envs)
        generator = torch.Generator().manual_seed(seed)
        targets = [(episodes + i) // num_envs for i in range(num_envs)]
        results = EpisodeResults(fps=int(envs.envs[0].metadata.get("render_fps", 30)))
        counts = [0] * num_envs
        obs, _ = envs.reset(seed=seed)
        while counts != targets:
            if record and counts[0] == 0:
                results.frames.append(frame_of(envs.envs[0], env.id))
            action, _, _ = acting.act(obs_spec.batch(obs), deterministic=deterministic, generator=generator)
            obs, _, terminated, truncated, info = envs.step(acting.env_actions(action))
            acting.ended(terminated | truncated)
            for index, ret, length in finished_episodes(info):
                if counts[index] < targets[index]:
                    counts[index] += 1
                    results.returns.append(ret)
                    results.lengths.append(length)
        return results
    finally:
        envs.close()
