"""Actor-critics: preprocess -> encoder per observation leaf -> concatenation -> torso and core
(none, or an LSTM) -> actor and critic heads, with one interface for rollouts (`act`) and
learning (`evaluate_actions`).

Observations are dicts of stored leaves (see spec.py), `[T, B, *shape]` or `[B, *shape]`.
Shapes: T/K time, B batch, L LSTM layers, H LSTM hidden size. A recurrent state is one tensor
`[2, L, B, H]` (h and c stacked); the MLP's is empty, `[2, 0, B, 0]`, so both flow through the
same buffer code; `state_dims` publishes the layout (None marks the batch axis). `first[t, b]`
is 1 where observation t starts an episode: the state is zeroed right before that observation,
in `act` and in `evaluate_actions` alike.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from trainer.core.action_masks import MASKED_LOGIT
from trainer.core.config import Config
from trainer.core.custom_networks import build_core, build_encoder, core_state_dims
from trainer.core.distributions import ActionDistribution, distribution_for
from trainer.core.encoders import ObsEncoder, layer_init
from trainer.core.preprocessing import ObsPreprocessor
from trainer.core.seeding import derive_seed
from trainer.core.spec import ROOT, ObsSpec, RolloutSpec, example_observation, is_recurrent, state_shape

Obs = dict[str, torch.Tensor] | torch.Tensor  # leaves by key; a plain Box observation may be its tensor


class _SigmoidTanh(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) - 1, with tanh's own backward (1 - y^2) on the saved output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(x * 2).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class Tanh(nn.Module):
    """nn.Tanh, computed through sigmoid when learning on a CPU where that is faster. torch's CPU
    tanh goes through MKL, whose kernels take a slow path on some CPUs: on an AMD EPYC it was about
    10x slower than sigmoid (280 vs 28 us on a 2048x64 batch), a third of the MLP update, while
    on an Intel Xeon it is twice as fast as the sigmoid form (40 vs 88 us). Rollout steps (no
    autograd, a few dozen rows) keep torch.tanh, which is cheaper there than a Python-level
    autograd Function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda or not torch.is_grad_enabled() or not sigmoid_tanh_is_faster():
            return torch.tanh(x)
        return _SigmoidTanh.apply(x)


@functools.cache
def sigmoid_tanh_is_faster() -> bool:
    """Timed once per process on a learner-sized batch; the sigmoid form is taken only where it
    is less than half tanh's time, so close timings cannot make two runs differ."""
    x = torch.randn(2048, 64)

    def fastest(function) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                function(x)
            times.append(time.perf_counter() - start)
        return min(times)

    return 2 * fastest(lambda x: torch.sigmoid(x * 2).mul_(2).sub_(1)) < fastest(torch.tanh)


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [layer_init(nn.Linear(n_in, n_out)), activation()]
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Base: preprocessing, encoder, heads and the distribution; subclasses add the torso and
    the core and provide the state. Parameters register in the order of format-1 checkpoints
    (distribution, heads, torsos), whose encoders had none, so their optimizer state still fits."""

    def __init__(
        self, obs: ObsSpec, encoder: ObsEncoder, dist: ActionDistribution, config: Config, feature_dim: int
    ) -> None:
        super().__init__()
        self.dist = dist
        self.actor_head = layer_init(nn.Linear(feature_dim, dist.num_params), std=0.01)
        self.critic_head = layer_init(nn.Linear(feature_dim, 1), std=1.0)
        self.preprocess = ObsPreprocessor(obs, config.ppo.normalize_obs, config.ppo.obs_clip)
        self.encoder = encoder
        self.mask_key = obs.mask_key  # the action mask's leaf (action_masks.py), None if unmasked

    @property
    def state_dims(self) -> tuple[int | None, ...]:
        """Dims of the recurrent state with None at the batch axis, e.g. (2, L, None, H)."""
        raise NotImplementedError

    @property
    def state_axis(self) -> int:
        """The batch axis of the recurrent state."""
        return self.state_dims.index(None)

    @property
    def recurrent(self) -> bool:
        """Whether the policy has memory: a state that holds numbers (spec.is_recurrent)."""
        return is_recurrent(self.state_dims)

    @torch.inference_mode()
    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero state `[2, L, B, H]` for rollouts. Inference tensors: never fed to autograd directly."""
        return torch.zeros(state_shape(self.state_dims, batch_size), device=self.actor_head.weight.device)

    def encode(self, obs: Obs) -> torch.Tensor:
        """Stored observation leaves `[..., *shape]` -> concatenated features `[..., F0]`."""
        return self.encoder(self.preprocess(_leaves(obs)))

    def features(
        self, obs: Obs, hidden: torch.Tensor, first: torch.Tensor, final_state: bool = True
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """obs leaves `[T, B, ...]`, first `[T, B]` -> (actor features, critic features) `[T, B, F]`,
        final state. `final_state=False` lets an implementation skip the state (returning None)
        where that is cheaper: training discards it."""
        raise NotImplementedError

    def step(
        self, obs: Obs, hidden: torch.Tensor, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step, the one that every actor runs (rollouts, evaluation and `predict` through
        `act`, bootstrapping through `value`, the exported program through InferencePolicy): obs
        leaves `[B, ...]` (or a plain Box's tensor), state, first `[B]` -> action distribution
        parameters `[B, P]`, value `[B]`, next state."""
        (actor_x, critic_x), hidden = self.features(_one_step(obs), hidden, first.unsqueeze(0))
        return self.actor_head(actor_x[0]), self.critic_head(critic_x[0]).squeeze(-1), hidden

    def act(
        self,
        obs: Obs,
        hidden: torch.Tensor,
        first: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One rollout step on obs leaves `[B, ...]` -> action, logprob `[B]`, value `[B]`, next state."""
        params, value, hidden = self.acting_step(obs, hidden, first)
        params = self.masked(params, obs)
        action = self.dist.mode(params) if deterministic else self.dist.sample(params, generator)
        return action, self.dist.log_prob(params, action), value, hidden

    def acting_step(
        self, obs: Obs, hidden: torch.Tensor, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`step` as acting runs it: the same outputs, which a subclass may compute in fewer calls
        where no gradient is wanted."""
        return self.step(obs, hidden, first)

    def masked(self, params: torch.Tensor, obs: Obs) -> torch.Tensor:
        """Action logits `[..., P]` with the illegal actions' set to MASKED_LOGIT, where the
        policy is masked: sampling, the mode, log-probs and entropy then all see only legal
        actions, alike in acting and in `evaluate_actions`."""
        if self.mask_key is None:
            return params
        return params.masked_fill(~obs[self.mask_key], MASKED_LOGIT)

    def value(self, obs: Obs, hidden: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """V(obs) `[B]` for bootstrapping, continuing from `hidden` (reset where `first`)."""
        return self.step(obs, hidden, first)[1]

    def evaluate_actions(
        self,
        obs: Obs,
        actions: torch.Tensor,
        hidden: torch.Tensor,
        first: torch.Tensor,
        precision: Callable[[], AbstractContextManager] = nullcontext,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequences of obs leaves `[K, B, ...]`, actions `[K, B, A]`, chunk-start state, first
        `[K, B]` -> logprob, entropy, value, each `[K, B]`. `precision`: the context the features
        are computed in (bf16 autocast, say); heads and distribution run in fp32 after it."""
        with precision():
            (actor_x, critic_x), _ = self.features(obs, hidden, first, final_state=False)
        params = self.masked(self.actor_head(actor_x.float()), obs)
        value = self.critic_head(critic_x.float()).squeeze(-1)
        return self.dist.log_prob(params, actions), self.dist.entropy(params), value


def _leaves(obs: Obs) -> dict[str, torch.Tensor]:
    return {ROOT: obs} if isinstance(obs, torch.Tensor) else obs


def _one_step(obs: Obs) -> dict[str, torch.Tensor]:
    return {key: x.unsqueeze(0) for key, x in _leaves(obs).items()}


def _activation(config: Config) -> type[nn.Module]:
    return Tanh if config.policy.activation == "tanh" else nn.ReLU


class MLPActorCritic(ActorCritic):
    """Separate actor and critic torsos (CleanRL's ppo.py) over the shared encoder, no recurrent state."""

    def __init__(self, obs: ObsSpec, dist: ActionDistribution, config: Config) -> None:
        encoder = make_encoder(obs, config)
        sizes = [encoder.output_size, *config.policy.hidden_sizes]
        super().__init__(obs, encoder, dist, config, sizes[-1])
        self.actor_torso = mlp(sizes, _activation(config))
        self.critic_torso = mlp(sizes, _activation(config))

    @property
    def state_dims(self) -> tuple[int | None, ...]:
        return (2, 0, None, 0)

    def features(self, obs, hidden, first, final_state=True):
        x = self.encode(obs)
        return (self.actor_torso(x), self.critic_torso(x)), hidden

    def acting_step(self, obs, hidden, first):
        """`step` through the layers' weights directly, without module calls: at a few dozen envs
        an acting forward costs its calls more than its arithmetic (CartPole's, 32 envs: 84 ->
        63 us). The same operations, so the same numbers."""
        if torch.is_grad_enabled():
            return self.step(obs, hidden, first)
        x = self.encode(obs)
        actor, critic = _inference_mlp(self.actor_torso, x), _inference_mlp(self.critic_torso, x)
        params = F.linear(actor, self.actor_head.weight, self.actor_head.bias)
        return params, F.linear(critic, self.critic_head.weight, self.critic_head.bias).squeeze(-1), hidden


_IN_PLACE_ACTIVATIONS = {Tanh: torch.Tensor.tanh_, nn.ReLU: torch.Tensor.relu_}


def _inference_mlp(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """An `mlp()` without autograd: tanh and ReLU in place on their layer's fresh output."""
    for layer in layers:
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight, layer.bias)
        else:
            in_place = _IN_PLACE_ACTIVATIONS.get(type(layer))
            x = in_place(x) if in_place is not None else layer(x)
    return x


PADDED_UNROLL_MAX_STARTS = 128  # CPU, 16 steps: padding wins up to ~128 starts at 64-1024 sequences


class LSTMActorCritic(ActorCritic):
    """Encoder -> torso -> LSTM -> shared features for both heads (CleanRL's ppo_atari_lstm.py)."""

    def __init__(self, obs: ObsSpec, dist: ActionDistribution, config: Config) -> None:
        policy = config.policy
        encoder = make_encoder(obs, config)
        sizes = [encoder.output_size, *policy.hidden_sizes]
        super().__init__(obs, encoder, dist, config, policy.lstm_hidden_size)
        self.torso = mlp(sizes, _activation(config))
        self.lstm = nn.LSTM(sizes[-1], policy.lstm_hidden_size, num_layers=policy.lstm_layers)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)

    @property
    def state_dims(self) -> tuple[int | None, ...]:
        return (2, self.lstm.num_layers, None, self.lstm.hidden_size)

    def features(self, obs, hidden, first, final_state: bool = True):
        x = self.torso(self.encode(obs))
        keep = (~first).to(x.dtype).unsqueeze(-1)  # [T, B, 1]: 0 where an episode starts
        h, c = hidden[0] * keep[0], hidden[1] * keep[0]
        if x.shape[0] == 1 or not first[1:].any():
            # One rollout step, or no episode starts after t=0: a single LSTM call.
            out, (h, c) = self.lstm(x, (h, c))
            return (out, out), torch.stack([h, c])
        # Episode starts inside. On a GPU one packed call beats many short ones. On a CPU
        # (oneDNN has no packed LSTM) short calls win, unless the final state is not needed and
        # there are few starts: then one padded call, whose cost grows with the number of starts,
        # beats the ~T calls of a split. Measured: benchmarks/lstm_unroll.py.
        if x.is_cuda:
            out, state = self._unroll_pieces(x, h, c, first, packed=True)
        elif not final_state and int(first[1:].sum()) <= PADDED_UNROLL_MAX_STARTS:
            out, state = self._unroll_pieces(x, h, c, first, packed=False)
        else:
            out, state = self._unroll_split(x, h, c, first)
        return (out, out), (torch.stack(state) if state is not None else None)

    def acting_step(self, obs, hidden, first):
        """`step` without autograd: the torso through its weights and each LSTM layer as one
        `lstm_cell` call, since nn.LSTM's per-call set-up costs more than one step's arithmetic
        at a few dozen envs (masked CartPole, 32 envs: 197 -> 106 us). The same numbers within
        float rounding (~1e-7)."""
        if torch.is_grad_enabled():
            return self.step(obs, hidden, first)
        x = _inference_mlp(self.torso, self.encode(obs))
        keep = (~first).to(x.dtype).unsqueeze(-1)  # [B, 1]: 0 where an episode starts
        h, c = hidden[0] * keep, hidden[1] * keep
        layers = []
        for layer, weights in enumerate(self.lstm.all_weights):
            x, c_out = torch.lstm_cell(x, (h[layer], c[layer]), *weights)
            layers.append((x, c_out))
        state = torch.stack([torch.stack([h for h, _ in layers]), torch.stack([c for _, c in layers])])
        params = F.linear(x, self.actor_head.weight, self.actor_head.bias)
        return params, F.linear(x, self.critic_head.weight, self.critic_head.bias).squeeze(-1), state

    def _unroll_split(self, x, h, c, first):
        """One LSTM call per stretch of steps in which no env starts an episode."""
        keep = (~first).to(x.dtype).unsqueeze(-1)
        starts = [0, *(first[1:].any(dim=1).nonzero().flatten() + 1).tolist(), x.shape[0]]
        outputs = []
        for begin, end in itertools.pairwise(starts):
            if begin > 0:
                h, c = h * keep[begin], c * keep[begin]
            out, (h, c) = self.lstm(x[begin:end], (h, c))
            outputs.append(out)
        return torch.cat(outputs), (h, c)

    def _unroll_pieces(self, x, h0, c0, first, packed: bool):
        """Unroll sequences with episode starts inside them in one LSTM call.

        Each column of `[T, B]` is cut where an episode starts; every piece becomes its own row
        of `[T, S]`, left-aligned, starting from the column's state (first piece) or zeros. The
        outputs equal a step-by-step loop that zeroes the state at each start. Packed, the call
        stops each row at its length and so also returns each column's final state; padded, the
        rows run on over zero padding (outputs discarded) and the final state is None.
        """
        T, B, F = x.shape
        starts = first.t().reshape(-1).clone()  # [B*T], column-major: (b, t)
        starts[::T] = True
        segment = starts.cumsum(0) - 1  # piece id of every (b, t)
        begin = starts.nonzero().squeeze(1)  # [S] flat index where each piece begins
        offset = torch.arange(B * T, device=x.device) - begin[segment]  # time within the piece
        S = begin.shape[0]
        pieces = x.new_zeros(T, S, F).index_put((offset, segment), x.transpose(0, 1).reshape(B * T, F))
        continuing = (begin % T == 0).nonzero().squeeze(1)  # one piece per column, in column order
        h = h0.new_zeros(h0.shape[0], S, h0.shape[2]).index_copy(1, continuing, h0)
        c = c0.new_zeros(h0.shape[0], S, h0.shape[2]).index_copy(1, continuing, c0)
        if packed:
            lengths = torch.diff(begin, append=torch.tensor([B * T], device=begin.device))
            sequences = nn.utils.rnn.pack_padded_sequence(pieces, lengths.cpu(), enforce_sorted=False)
            out, (hn, cn) = self.lstm(sequences, (h, c))
            out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=T)
            last = segment.reshape(B, T)[:, -1]  # each column's final piece holds its final state
            state = (hn[:, last], cn[:, last])
        else:
            out, _ = self.lstm(pieces, (h, c))
            state = None
        return out[offset, segment].reshape(B, T, -1).transpose(0, 1), state


class CoreActorCritic(ActorCritic):
    """Encoder -> your core (`policy.kind: package.module:Class`, docs/networks.md) -> shared
    features for both heads. A core without memory declares `state_dims = ()`; it then gets and
    gives back an empty state `[B, 0]`."""

    def __init__(self, obs: ObsSpec, dist: ActionDistribution, config: Config) -> None:
        encoder = make_encoder(obs, config)
        core = build_core(config.policy, encoder.output_size)
        super().__init__(obs, encoder, dist, config, core.output_size)
        self.core = core

    @property
    def state_dims(self) -> tuple[int | None, ...]:
        return core_state_dims(self.core)

    def features(self, obs, hidden, first, final_state: bool = True):
        out, state = self.core(self.encode(obs), hidden, first)
        return (out, out), (state if self.core.state_dims else hidden)


def make_encoder(obs: ObsSpec, config: Config) -> nn.Module:
    """The built-in per-leaf encoders, or `policy.encoder: package.module:Class`."""
    if config.policy.encoder == "auto":
        return ObsEncoder(obs, config.policy.cnn)
    preprocess = ObsPreprocessor(obs, config.ppo.normalize_obs, config.ppo.obs_clip)
    example = {leaf.key: example_observation(leaf, (1, 2)) for leaf in obs.fed_leaves}
    return build_encoder(config.policy, obs, preprocess, example)


def build_policy(obs: ObsSpec, action_space: spaces.Space, config: Config) -> ActorCritic:
    """The policy, its initial weights drawn from the run's seed (the same on every learner rank)
    on a forked RNG: building one leaves the process's RNG as it was."""
    kind = config.policy.kind
    cls = MLPActorCritic if kind == "mlp" else LSTMActorCritic if kind == "lstm" else CoreActorCritic
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "learner"))
        return cls(obs, distribution_for(action_space), config)


def rollout_spec(obs: ObsSpec, policy: ActorCritic, config: Config, padded: bool = False) -> RolloutSpec:
    """The fields of one rollout, for this config and policy (workers and learner alike);
    `padded`: with the `valid` flag of multi-agent rollouts."""
    return RolloutSpec.build(
        obs,
        action_dim=policy.dist.action_dim,
        action_dtype=policy.dist.action_dtype,
        state_dims=policy.state_dims,
        rollout_steps=config.ppo.rollout_steps,
        sequence_length=config.sequence_length,
        valid=padded,
    )
