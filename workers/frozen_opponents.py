"""Self-play's frozen seats in a worker: each env's episode is played against one snapshot of the
pool (drawn as the pool's probabilities say, with the worker's sampling RNG), which acts its
agents with a recurrent state of their own. Nothing these agents do is recorded or trained on.
Same interface as PolicySlots for acting, rewards and ends.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.core.acting import Acting, to_env_actions
from trainer.core.agents import PolicyGroup
from trainer.core.policy import build_policy


class FrozenOpponents:
    def __init__(self, group: PolicyGroup, num_envs: int, seats_per_env: int) -> None:
        self.group, self.per_env = group, seats_per_env
        self.obs_spec, self.action_space = group.probe.obs_spec, group.probe.action_space
        self.networks: dict[int, torch.nn.Module] = {}  # pool member id -> its network
        self.ids: list[int] = []
        self.probabilities = torch.ones(1)
        template = self._network()
        self.acting = Acting(template, self.action_space, num_envs * seats_per_env)
        self.state_axis = template.state_axis
        self.member: list[int | None] = [None] * num_envs  # who plays env i's episode (drawn at its first move)

    def _network(self):
        network = build_policy(self.obs_spec, self.action_space, self.group.config)
        network.requires_grad_(False)
        return network

    def load(self, opponents: dict) -> None:
        """The pool as the learner published it: networks built for new members, dropped ones let go."""
        for member_id in opponents["ids"]:
            if member_id not in self.networks:
                self.networks[member_id] = self._network()
                self.networks[member_id].load_state_dict(opponents["weights"][member_id])
        self.networks = {member_id: self.networks[member_id] for member_id in opponents["ids"]}
        self.ids = list(opponents["ids"])
        self.probabilities = torch.tensor(opponents["probabilities"], dtype=torch.float64)

    def start(self) -> None:
        self.acting.start(len(self.member) * self.per_env)
        self.member = [None] * len(self.member)

    def new_episode(self, env_index: int) -> None:
        """Env `env_index` starts an episode: its opponent is drawn at the episode's first move."""
        self.member[env_index] = None

    @torch.inference_mode()
    def act(self, slots: np.ndarray, observations: list, generator: torch.Generator) -> np.ndarray:
        """The frozen agents in `slots` act, each env's with its episode's snapshot."""
        envs = slots // self.per_env
        for env_index in np.unique(envs):
            if self.member[env_index] is None or self.member[env_index] not in self.networks:
                drawn = int(torch.multinomial(self.probabilities, 1, generator=generator))
                self.member[env_index] = self.ids[drawn]
        members = np.array([self.member[env_index] for env_index in envs])
        actions = np.zeros((len(slots), *self.action_space.shape), dtype=self.action_space.dtype)
        for member_id in np.unique(members):
            rows = np.flatnonzero(members == member_id)
            index = torch.from_numpy(slots[rows])
            obs = self.obs_spec.stack([observations[row] for row in rows])
            network = self.networks[int(member_id)]
            hidden = self.acting.hidden.index_select(self.state_axis, index)
            action, _, _, next_hidden = network.act(obs, hidden, self.acting.first[index], generator=generator)
            if network.recurrent:
                self.acting.hidden.index_copy_(self.state_axis, index, next_hidden)
            self.acting.first[index] = False
            actions[rows] = to_env_actions(action.numpy(), self.action_space)
        return actions

    def reward(self, slot: int, value: float) -> None:
        pass  # the side's score is the worker's to keep (for the episode's result)

    def ended(self, slot: int, agent: str, terminated: bool, truncated: bool) -> None:
        self.acting.first[slot] = True
