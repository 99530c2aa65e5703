"""A trained policy for scripts: `trainer.load_policy(run_dir | checkpoint | .pt2).predict(obs)`.

`predict` takes numpy observations as the env gives them, one or a batch, with the saved
preprocessing (observation normalizer, /255, one-hot) applied inside, and returns env actions:
the same acting code as the workers (trainer/core/acting.py). A checkpoint loads on the CPU
wherever it was written; an exported `.pt2` runs without our network classes, deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from trainer.core.acting import Acting
from trainer.core.config import Config, load_config
from trainer.core.envs import probe_env
from trainer.core.errors import UserError
from trainer.core.policy import ActorCritic, build_policy
from trainer.core.spec import ROOT, ObsSpec, pick_leaf
from trainer.runtime.checkpoint import CheckpointError, check_spaces, load_checkpoint


class ExportedNetwork:
    """An exported program behind the acting interface of ActorCritic (deterministic only)."""

    def __init__(self, module, state_dims: tuple[int | None, ...], single: bool) -> None:
        self.module, self.state_dims, self.single = module, state_dims, single

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        return torch.zeros([batch_size if d is None else d for d in self.state_dims])

    def act(self, obs, hidden, first, deterministic=True, generator=None):
        if not deterministic:
            raise UserError("an exported .pt2 policy only takes its most likely action; load the checkpoint to sample")
        action, hidden = self.module(obs[ROOT] if self.single else obs, hidden, first)
        return action, None, None, hidden


@dataclass
class Policy:
    """A trained policy: `predict`, the spaces it acts on, and where it came from."""

    network: ActorCritic | ExportedNetwork
    obs_spec: ObsSpec
    observation_space: spaces.Space
    action_space: spaces.Space
    config: Config
    path: Path
    iteration: int | None = None  # of the checkpoint (None for an exported program)
    seed: int = 0

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def recurrent(self) -> bool:
        return 0 not in self.network.state_dims  # a policy without memory has an empty state

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """obs (one, or a batch of B, as the env gives them) -> (action, state).

        `state` is the recurrent state `predict` returned for these envs (None: start fresh; it
        is None for a policy without memory); `episode_start` `[B]` marks the envs whose obs
        begins a new episode (their state is zeroed first). A single obs gives a single action
        and a state with a batch of 1."""
        single = self._is_single(obs)
        leaves = self.obs_spec.stack([obs]) if single else self.obs_spec.batch(obs)
        batch = len(next(iter(leaves.values())))
        acting = Acting(self.network, self.action_space, batch)
        if state is not None and self.recurrent:
            acting.hidden = torch.as_tensor(np.asarray(state), dtype=torch.float32)
        if episode_start is not None or state is not None:
            starts = np.zeros(batch, bool) if episode_start is None else np.asarray(episode_start, bool).reshape(batch)
            acting.ended(starts)
        action, _, _ = acting.act(leaves, deterministic=deterministic, generator=self.generator)
        env_action = acting.env_actions(action)
        next_state = acting.hidden.numpy().copy() if self.recurrent else None
        return (env_action[0] if single else env_action), next_state

    def _is_single(self, obs) -> bool:
        """Whether obs is one observation (every leaf at its own shape) or a batch of them."""
        leaf = self.obs_spec.leaves[0]
        value = np.asarray(pick_leaf(obs, leaf.key))
        if value.shape == leaf.shape:
            return True
        if value.shape[1:] == leaf.shape:
            return False
        raise UserError(
            f"predict: observation {leaf.key!r} has shape {value.shape}; expected {leaf.shape} (one) "
            f"or (B, {', '.join(map(str, leaf.shape))}) (a batch), as the env {self.config.env.id!r} gives it"
        )


def load_policy(target: str | Path, seed: int = 0) -> Policy:
    """The policy of a run directory (its newest checkpoint), a checkpoint file or an exported
    `.pt2`. The env of its config is made once to learn the spaces (its package must be
    installed); `seed` seeds sampled actions (`deterministic=False`)."""
    if str(target).endswith(".pt2"):
        from trainer.export import load_exported

        config, module, state_dims = load_exported(target)
        probe = probe_env(config.env, config.policy)
        network = ExportedNetwork(module, state_dims, probe.obs_spec.is_single)
        return Policy(
            network, probe.obs_spec, probe.observation_space, probe.action_space, config, Path(target), None, seed
        )
    path, state = load_checkpoint(target)
    config = load_config(state["config"])
    probe = probe_env(config.env, config.policy)
    check_spaces(state, probe, config.env.id, path)
    network = build_policy(probe.obs_spec, probe.action_space, config)
    try:
        network.load_state_dict(state["runtime"]["learner"]["policy"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the policy of its config: {exc}") from None
    network.requires_grad_(False)
    return Policy(
        network.eval(),
        probe.obs_spec,
        probe.observation_space,
        probe.action_space,
        config,
        path,
        state["iteration"],
        seed,
    )
