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

from trainer.core.messages import TENSOR_FIELDS, Rollout


@dataclass
class Minibatch:
    """B whole sequences of K steps, time-major."""

    obs: torch.Tensor  # [K, B, D]
    actions: torch.Tensor  # [K, B, A]
    logprob: torch.Tensor  # [K, B]
    value: torch.Tensor  # [K, B]
    advantage: torch.Tensor  # [K, B]
    ret: torch.Tensor  # [K, B]
    first: torch.Tensor  # [K, B]
    hidden: torch.Tensor  # [2, L, B, H]


class RolloutBuffer:
    def __init__(
        self,
        *,
        rollout_steps: int,
        num_envs: int,
        envs_per_worker: int,
        obs_dim: int,
        action_dim: int,
        action_dtype: torch.dtype,
        state_shape: tuple[int, int],
        sequence_length: int,
        device: torch.device,
    ) -> None:
        T, N, K = rollout_steps, num_envs, sequence_length
        layers, size = state_shape
        self.T, self.N, self.K, self.C = T, N, K, T // K
        self.envs_per_worker = envs_per_worker
        self.device = device
        pin = device.type == "cuda"

        def alloc(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.obs = alloc(T, N, obs_dim)
        self.actions = alloc(T, N, action_dim, dtype=action_dtype)
        self.logprob = alloc(T, N)
        self.value = alloc(T, N)
        self.reward = alloc(T, N)
        self.terminated = alloc(T, N, dtype=torch.bool)
        self.truncated = alloc(T, N, dtype=torch.bool)
        self.first = alloc(T, N, dtype=torch.bool)
        self.bootstrap_value = alloc(T, N)
        self.last_value = alloc(N)
        self.hidden = alloc(self.C, 2, layers, N, size)
        self.advantage = alloc(T, N)
        self.ret = alloc(T, N)
        # Rollouts land in pinned host memory first when the learner is on CUDA, so the
        # host-to-device copy is one asynchronous transfer per field.
        self._staging = (
            {name: torch.empty_like(getattr(self, name), device="cpu").pin_memory() for name in TENSOR_FIELDS}
            if pin
            else None
        )

    def expected_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype each rollout field must have (E envs in place of N)."""
        E = self.envs_per_worker
        shapes = {}
        for name in TENSOR_FIELDS:
            full = getattr(self, name)
            axis = env_axis(name)
            shape = list(full.shape)
            shape[axis] = E
            shapes[name] = (tuple(shape), full.dtype)
        return shapes

    def store(self, slot: int, rollout: Rollout) -> None:
        """Copy one worker's rollout into env columns `[slot*E, (slot+1)*E)`, values only."""
        envs = slice(slot * self.envs_per_worker, (slot + 1) * self.envs_per_worker)
        for name in TENSOR_FIELDS:
            index = (slice(None),) * env_axis(name) + (envs,)
            source = getattr(rollout, name)
            if self._staging is not None:
                self._staging[name][index].copy_(source)
                source = self._staging[name][index]
            getattr(self, name)[index].copy_(source, non_blocking=True)

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
        `reward` replaces the stored rewards (e.g. scaled ones) when given;
        `bootstrap_truncated=False` treats truncation as termination (for comparison only)."""
        reward = self.reward if reward is None else reward
        done = self.terminated | self.truncated
        not_done = (~done).float()
        ends_value = self.terminated if bootstrap_truncated else done
        bootstrap = torch.where(ends_value, 0.0, self.bootstrap_value)
        next_value = self.last_value
        next_advantage = torch.zeros_like(self.last_value)
        for t in reversed(range(self.T)):
            next_v = torch.where(done[t], bootstrap[t], next_value)
            delta = reward[t] + gamma * next_v - self.value[t]
            next_advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
            self.advantage[t] = next_advantage
            next_value = self.value[t]
        torch.add(self.advantage, self.value, out=self.ret)

    def minibatches(self, num_minibatches: int, generator: torch.Generator | None = None) -> Iterator[Minibatch]:
        """Shuffled minibatches of whole sequences: (chunk, env) pairs of K steps each."""
        num_sequences = self.C * self.N
        order = torch.randperm(num_sequences, generator=generator).to(self.device)
        for index in order.chunk(num_minibatches):
            yield Minibatch(
                obs=self._sequences(self.obs, index),
                actions=self._sequences(self.actions, index),
                logprob=self._sequences(self.logprob, index),
                value=self._sequences(self.value, index),
                advantage=self._sequences(self.advantage, index),
                ret=self._sequences(self.ret, index),
                first=self._sequences(self.first, index),
                hidden=self._sequence_hidden()[:, :, index],
            )

    def _sequence_hidden(self) -> torch.Tensor:
        """[C, 2, L, N, H] -> [2, L, C*N, H], sequences in the order `_sequences` uses."""
        _, two, layers, _, size = self.hidden.shape
        return self.hidden.permute(1, 2, 0, 3, 4).reshape(two, layers, self.C * self.N, size)

    def _sequences(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [K, C*N, ...] (sequence s = chunk s // N, env s % N) -> columns `index`."""
        tail = x.shape[2:]
        return (
            x.reshape(self.C, self.K, self.N, *tail).transpose(0, 1).reshape(self.K, self.C * self.N, *tail)[:, index]
        )


def env_axis(name: str) -> int:
    """Which axis of a rollout field runs over envs."""
    return {"last_value": 0, "hidden": 3}.get(name, 1)
