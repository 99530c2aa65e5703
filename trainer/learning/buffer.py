"""The rollout buffer: allocated once as `[T, N, ...]`, filled by copying worker rollouts into
their env slices, then read as minibatches of whole sequences.

The copy stores values, not tensors: whatever inference flag a rollout's tensors carry, the
buffer's own tensors stay ordinary, so the learner can backpropagate through them.
Shapes: T rollout steps, N total envs, K sequence length, C = T / K chunks, B sequences.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from trainer.core.messages import Rollout
from trainer.core.spec import RolloutSpec, obs_fields


@dataclass
class Minibatch:
    """B whole sequences of K steps, time-major."""

    obs: dict[str, torch.Tensor]  # per leaf [K, B, *leaf], as stored (images uint8)
    actions: torch.Tensor  # [K, B, A]
    logprob: torch.Tensor  # [K, B]
    value: torch.Tensor  # [K, B]
    advantage: torch.Tensor  # [K, B]
    ret: torch.Tensor  # [K, B]
    first: torch.Tensor  # [K, B]
    hidden: torch.Tensor  # the state at each sequence's start, the LSTM's [2, L, B, H]
    count: int  # samples in the whole minibatch: K x B, or more when this is one shard's part of it
    valid: torch.Tensor | None = None  # [K, B]: the samples to train on, where some are padding


class RolloutBuffer:
    """Every field of `spec` as `[..., N, ...]` (N = all envs) on the learner's device."""

    def __init__(self, spec: RolloutSpec, *, num_envs: int, envs_per_worker: int, device: torch.device) -> None:
        self.spec = spec
        self.tensors = spec.allocate(num_envs, device)
        self.T, self.N = self.tensors["reward"].shape
        self.K, self.C = spec.sequence_length, self.T // spec.sequence_length
        self.envs_per_worker = envs_per_worker
        self._step_offsets = (torch.arange(self.K, device=device) * self.N).unsqueeze(1)  # [K, 1]: k steps on
        self.device = device
        self.advantage = torch.zeros(self.T, self.N, device=device)
        self.ret = torch.zeros(self.T, self.N, device=device)
        # Rollouts land in pinned host memory first when the learner is on CUDA, so the
        # host-to-device copy is one asynchronous transfer per field.
        self._staging = (
            {name: torch.empty_like(t, device="cpu").pin_memory() for name, t in self.tensors.items()}
            if device.type == "cuda"
            else None
        )

    def __getattr__(self, name: str) -> torch.Tensor:
        """Fields by name (`buffer.reward`, `buffer.hidden`), for the GAE code and for tests."""
        tensors = self.__dict__.get("tensors", {})
        if name in tensors:
            return tensors[name]
        raise AttributeError(name)

    @property
    def obs(self) -> dict[str, torch.Tensor]:
        return obs_fields(self.tensors)

    def expected_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype each rollout field must have (E envs in place of N)."""
        return self.spec.expected(self.envs_per_worker)

    def store(self, slot: int, rollout: Rollout) -> None:
        """Copy one worker's rollout into env columns `[slot*E, (slot+1)*E)`, values only."""
        envs = slice(slot * self.envs_per_worker, (slot + 1) * self.envs_per_worker)
        for field in self.spec.fields:
            index = (slice(None),) * field.env_axis + (envs,)
            source = rollout.tensors[field.name]
            if self._staging is not None:
                self._staging[field.name][index].copy_(source)
                source = self._staging[field.name][index]
            self.tensors[field.name][index].copy_(source, non_blocking=True)

    @torch.no_grad()
    def compute_advantages(
        self,
        gamma: float,
        gae_lambda: float,
        reward: torch.Tensor | None = None,
        bootstrap_truncated: bool = True,
    ) -> None:
        """GAE(lambda). A step that ends an episode bootstraps from `bootstrap_value` (the
        final observation's value when truncated, 0 when terminated) and stops the recursion.
        Padding samples (`valid` false, multi-agent) are stepped over and get advantage 0.
        `reward` replaces the stored rewards (e.g. scaled ones) when given;
        `bootstrap_truncated=False` treats truncation as termination (for comparison only)."""
        reward = self.reward if reward is None else reward
        valid = self.tensors.get("valid")  # padding (multi-agent): stepped over, its advantage 0
        done = self.terminated | self.truncated
        not_done = (~done).float()
        ends_value = self.terminated if bootstrap_truncated else done
        bootstrap = torch.where(ends_value, 0.0, self.bootstrap_value)
        next_value = self.last_value
        next_advantage = torch.zeros_like(self.last_value)
        for t in reversed(range(self.T)):
            next_v = torch.where(done[t], bootstrap[t], next_value)
            delta = reward[t] + gamma * next_v - self.value[t]
            advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
            if valid is None:
                self.advantage[t], next_advantage, next_value = advantage, advantage, self.value[t]
            else:  # the valid samples on either side of padding are each other's neighbours
                self.advantage[t] = torch.where(valid[t], advantage, 0.0)
                next_advantage = torch.where(valid[t], advantage, next_advantage)
                next_value = torch.where(valid[t], self.value[t], next_value)
        torch.add(self.advantage, self.value, out=self.ret)

    def minibatches(
        self, num_minibatches: int, generator: torch.Generator | None = None, shard: tuple[int, int] | None = None
    ) -> Iterator[Minibatch]:
        """Shuffled minibatches of whole sequences: (chunk, env) pairs of K steps each.

        `shard` (first env, all envs): this buffer holds envs [first, first + N) of all of them
        (one of several learners). The permutation is then of every env's sequences, the same on
        every shard, and each minibatch is this shard's part of the one a single learner draws."""
        envs = self.N if shard is None else shard[1]
        order = torch.randperm(self.C * envs, generator=generator).to(self.device)
        hidden, axis = self._sequence_hidden(), self.state_axis
        for index in order.chunk(num_minibatches):
            count = len(index) * self.K
            if shard is not None:
                chunk, env = index // envs, index % envs
                mine = (env >= shard[0]) & (env < shard[0] + self.N)
                index = chunk[mine] * self.N + (env[mine] - shard[0])
            steps = self._steps(index)
            yield Minibatch(
                obs={key: self._sequences(x, steps) for key, x in self.obs.items()},
                actions=self._sequences(self.actions, steps),
                logprob=self._sequences(self.logprob, steps),
                value=self._sequences(self.value, steps),
                advantage=self._sequences(self.advantage, steps),
                ret=self._sequences(self.ret, steps),
                first=self._sequences(self.first, steps),
                hidden=hidden.index_select(axis, index),
                count=count,
                valid=self._sequences(self.valid, steps) if "valid" in self.tensors else None,
            )

    @property
    def state_axis(self) -> int:
        """The batch axis of one step's recurrent state (2 in the LSTM's [2, L, B, H])."""
        return next(f for f in self.spec.fields if f.name == "hidden").env_axis - 1

    def _sequence_hidden(self) -> torch.Tensor:
        """[C, ..., N, ...] -> [..., C*N, ...] (the LSTM's [C, 2, L, N, H] -> [2, L, C*N, H]),
        sequences in the order `_sequences` uses."""
        axis = self.state_axis
        hidden = self.hidden.movedim(0, axis)  # [..., C, N, ...]
        return hidden.reshape(*hidden.shape[:axis], self.C * self.N, *hidden.shape[axis + 2 :])

    def _steps(self, index: torch.Tensor) -> torch.Tensor:
        """The rows of the [T * N] steps that sequences `index` hold, [K, B]: sequence s = chunk
        s // N, env s % N starts at step (chunk * K) * N + env, and goes on N rows at a time."""
        return (index // self.N * (self.K * self.N) + index % self.N).unsqueeze(0) + self._step_offsets

    def _sequences(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [K, B, ...]: one index_select of the picked steps from the field's
        [T * N, ...] view, so only they are copied, never the whole field (for any K)."""
        tail = x.shape[2:]
        return x.reshape(-1, *tail).index_select(0, steps.reshape(-1)).view(*steps.shape, *tail)
