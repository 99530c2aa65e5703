"""Policies and action distributions: inference-mode initial state (invariant 1), the LSTM
sequence unroll equal to a step-by-step loop, output shapes per action space, the hand-written
distributions against torch.distributions, the sigmoid-based tanh against torch.tanh, and clear
errors for unsupported spaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical, Normal

from tests.conftest import vector_policy
from tests.envs.networks import GRUCore
from trainer.core.config import Config, PolicyConfig
from trainer.core.custom_networks import NetworkInterfaceError
from trainer.core.distributions import DiagGaussian, MultiCategorical, distribution_for
from trainer.core.errors import UserError
from trainer.core.policy import ActorCritic, Tanh, _SigmoidTanh, build_policy, sigmoid_tanh_is_faster
from trainer.core.spec import ObsSpec, state_shape

OBS_DIM = 5
ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "multidiscrete": spaces.MultiDiscrete([3, 4, 2]),
    "box": spaces.Box(-1.0, 1.0, (2,), dtype=np.float32),
}


GRU = "tests.envs.networks:GRUCore"  # a custom core (docs/networks.md), state [1, B, H]
RESIDUAL = "tests.envs.networks:ResidualMLPCore"  # a custom core without memory


def make_policy(kind: str, space: spaces.Space, layers: int = 1, seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    config = PolicyConfig(kind=kind, hidden_sizes=[16, 12], lstm_hidden_size=10, lstm_layers=layers)
    return vector_policy(OBS_DIM, space, config)


@pytest.mark.parametrize("kind", ["mlp", "lstm", GRU])
def test_initial_hidden_is_a_zero_inference_tensor(kind: str) -> None:
    """Invariant 1."""
    policy = make_policy(kind, spaces.Discrete(2), layers=2)
    hidden = policy.initial_hidden(7)
    assert hidden.is_inference()
    expected = {"lstm": (2, 2, 7, 10), "mlp": (2, 0, 7, 0), GRU: (1, 7, 10)}[kind]
    assert tuple(hidden.shape) == expected
    assert not hidden.any()


def random_first(K: int, B: int, resets_inside: bool, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    first = torch.rand(K, B, generator=generator) < 0.25
    first[0, ::2] = True
    if resets_inside:
        # Resets at different steps in different envs, some envs with several, one with none.
        first[3, 1] = first[4, 2] = first[9, 1] = True
        first[:, -1] = False
        assert first[1:].any(dim=1).sum() >= 3
    else:
        first[1:] = False  # the single-call fast path
    return first


@pytest.mark.parametrize("resets_inside", [True, False], ids=["resets", "no-resets"])
@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_unroll_equals_step_loop(resets_inside: bool, layers: int) -> None:
    """evaluate_actions over [K, B] with resets == act() one step at a time, as the worker does."""
    K, B = 12, 5
    policy = make_policy("lstm", spaces.MultiDiscrete([3, 2]), layers=layers)
    torch.manual_seed(2)
    obs = torch.randn(K, B, OBS_DIM)
    first = random_first(K, B, resets_inside)
    hidden0 = torch.randn(2, layers, B, 10) * 0.5  # a mid-episode state: resets must zero it

    actions, logprobs, values = [], [], []
    with torch.inference_mode():
        hidden = hidden0.clone()
        for t in range(K):
            action, logprob, value, hidden = policy.act(obs[t], hidden, first[t])
            actions.append(action)
            logprobs.append(logprob)
            values.append(value)
        step_hidden = hidden.clone()
    actions = torch.stack(actions).clone()

    logprob, entropy, value = policy.evaluate_actions(obs, actions, hidden0, first)
    torch.testing.assert_close(logprob, torch.stack(logprobs), rtol=0, atol=1e-5)
    torch.testing.assert_close(value, torch.stack(values), rtol=0, atol=1e-5)
    assert entropy.shape == (K, B)
    _, final_hidden = policy.features(obs, hidden0, first)
    torch.testing.assert_close(final_hidden, step_hidden, rtol=0, atol=1e-5)


def test_lstm_reset_makes_the_past_irrelevant() -> None:
    """After `first`, outputs do not depend on what came before (state zeroed, not kept)."""
    K, B = 6, 3
    policy = make_policy("lstm", spaces.Discrete(2))
    obs = torch.randn(K, B, OBS_DIM)
    first = torch.zeros(K, B, dtype=torch.bool)
    first[3] = True
    actions = torch.zeros(K, B, 1, dtype=torch.long)
    other_obs = obs.clone()
    other_obs[:3] = torch.randn(3, B, OBS_DIM) * 3
    with torch.no_grad():
        a = policy.evaluate_actions(obs, actions, torch.randn(2, 1, B, 10), first)
        b = policy.evaluate_actions(other_obs, actions, torch.randn(2, 1, B, 10), first)
    for x, y in zip(a, b):
        torch.testing.assert_close(x[3:], y[3:], rtol=0, atol=1e-6)
    value_a, value_b = a[2], b[2]
    assert (value_a[:3] - value_b[:3]).abs().max() > 1e-3  # before the reset they do differ


@pytest.mark.parametrize("kind", ["mlp", "lstm", GRU])
def test_initial_hidden_fed_straight_into_evaluate_actions(kind: str) -> None:
    """Pinned behaviour: this works, and gives the same gradients as a cloned state.

    The inference tensor is never saved for backward itself: the LSTM multiplies the state by
    the `first` mask before the LSTM call (creating an ordinary tensor), and the MLP ignores
    the state. If this starts raising, a layer now saves the raw state: see invariant 1."""
    K, B = 4, 3
    policy = make_policy(kind, spaces.Discrete(3))
    obs = torch.randn(K, B, OBS_DIM)
    actions = torch.randint(0, 3, (K, B, 1))
    first = torch.zeros(K, B, dtype=torch.bool)

    def grads(hidden: torch.Tensor) -> list[torch.Tensor]:
        policy.zero_grad(set_to_none=True)
        logprob, entropy, value = policy.evaluate_actions(obs, actions, hidden, first)
        (logprob.sum() + entropy.sum() + value.sum()).backward()
        return [p.grad.clone() for p in policy.parameters() if p.grad is not None]

    inference_state = policy.initial_hidden(B)
    assert inference_state.is_inference()
    with_inference = grads(inference_state)
    with_clone = grads(torch.zeros(state_shape(policy.state_dims, B)))
    assert len(with_inference) == len(with_clone) > 0
    for a, b in zip(with_inference, with_clone):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("space_name", list(ACTION_SPACES))
@pytest.mark.parametrize("kind", ["mlp", "lstm", GRU])
def test_output_shapes(kind: str, space_name: str) -> None:
    space = ACTION_SPACES[space_name]
    policy = make_policy(kind, space)
    dist = policy.dist
    K, B = 4, 6
    action_dim = {"discrete": 1, "multidiscrete": 3, "box": 2}[space_name]
    assert dist.action_dim == action_dim
    with torch.inference_mode():
        action, logprob, value, hidden = policy.act(
            torch.randn(B, OBS_DIM), policy.initial_hidden(B), torch.ones(B, dtype=torch.bool)
        )
        greedy, *_ = policy.act(
            torch.randn(B, OBS_DIM), policy.initial_hidden(B), torch.ones(B, dtype=torch.bool), deterministic=True
        )
    assert action.shape == greedy.shape == (B, action_dim)
    assert action.dtype == dist.action_dtype
    assert logprob.shape == value.shape == (B,)
    assert hidden.shape == policy.initial_hidden(B).shape
    if space_name != "box":
        nvec = torch.as_tensor(space.nvec if space_name == "multidiscrete" else [space.n])
        assert ((action >= 0) & (action < nvec)).all()
        assert ((greedy >= 0) & (greedy < nvec)).all()

    actions = torch.stack([action] * K)
    logprob, entropy, value = policy.evaluate_actions(
        torch.randn(K, B, OBS_DIM), actions, policy.initial_hidden(B).clone(), torch.zeros(K, B, dtype=torch.bool)
    )
    assert logprob.shape == entropy.shape == value.shape == (K, B)
    assert logprob.requires_grad and value.requires_grad


def test_multicategorical_matches_torch_categorical() -> None:
    nvec = [3, 5, 2]
    dist = MultiCategorical(nvec)
    params = torch.randn(4, 7, sum(nvec)) * 3
    actions = torch.stack([torch.randint(0, n, (4, 7)) for n in nvec], dim=-1)
    parts = [Categorical(logits=p) for p in params.split(nvec, dim=-1)]
    expected_logprob = sum(c.log_prob(a) for c, a in zip(parts, actions.unbind(-1)))
    expected_entropy = sum(c.entropy() for c in parts)
    torch.testing.assert_close(dist.log_prob(params, actions), expected_logprob)
    torch.testing.assert_close(dist.entropy(params), expected_entropy)


def test_multicategorical_samples_follow_softmax() -> None:
    torch.manual_seed(0)
    dist = MultiCategorical([4])
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    samples = dist.sample(logits.expand(200_000, 4))[:, 0]
    frequencies = torch.bincount(samples, minlength=4).float() / len(samples)
    torch.testing.assert_close(frequencies, torch.softmax(logits, 0), rtol=0, atol=0.01)
    assert dist.mode(logits.unsqueeze(0)).item() == 3


def test_diag_gaussian_matches_torch_normal() -> None:
    dist = DiagGaussian(3)
    with torch.no_grad():
        dist.log_std.copy_(torch.tensor([-1.0, 0.0, 0.7]))
    params = torch.randn(4, 7, 3)
    actions = torch.randn(4, 7, 3) * 2
    normal = Normal(params, dist.log_std.exp().detach())
    torch.testing.assert_close(dist.log_prob(params, actions), normal.log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(params), normal.entropy().sum(-1))
    torch.manual_seed(0)
    samples = dist.sample(torch.zeros(100_000, 3))
    torch.testing.assert_close(samples.std(0), dist.log_std.exp().detach(), rtol=0.02, atol=0)


def test_gaussian_log_std_is_a_trained_policy_parameter() -> None:
    policy = make_policy("mlp", ACTION_SPACES["box"])
    assert any(p is policy.dist.log_std for p in policy.parameters())
    assert "dist.log_std" in policy.state_dict()


@pytest.mark.parametrize(
    "space, name",
    [
        (spaces.Dict({"a": spaces.Discrete(2)}), "Dict"),
        (spaces.Box(-1.0, 1.0, (2, 3)), "Box"),
        (spaces.MultiDiscrete([[2, 3], [4, 5]]), "MultiDiscrete"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), "Tuple"),
    ],
)
def test_unsupported_action_space_is_a_user_error(space: spaces.Space, name: str) -> None:
    with pytest.raises(UserError, match=rf"unsupported action space {name}"):
        distribution_for(space)


@pytest.mark.parametrize(
    "space, name",
    [
        (spaces.Sequence(spaces.Box(0, 1, (2,))), "Sequence"),
        (spaces.Dict({"a": spaces.Discrete(2), "g": spaces.Graph(spaces.Box(0, 1, (2,)), None)}), "Graph"),
    ],
)
def test_unsupported_observation_space_names_space_env_and_way_out(space: spaces.Space, name: str) -> None:
    with pytest.raises(UserError, match=rf"env 'Some-v0': observation space {name} .*add an observation wrapper"):
        ObsSpec.from_space(space, "Some-v0")


def test_observation_with_no_numbers_is_refused_and_text_leaves_are_left_out() -> None:
    with pytest.raises(UserError, match=r"env 'T-v0': observation space Text.*is not numeric.*env.wrappers"):
        ObsSpec.from_space(spaces.Text(5), "T-v0")
    spec = ObsSpec.from_space(spaces.Dict({"mission": spaces.Text(5), "pos": spaces.Discrete(3)}), "T-v0")
    assert spec.keys == ["pos"] and spec.dropped == ("mission",)


def test_sigmoid_tanh_matches_torch_tanh_in_value_and_gradient() -> None:
    """The learner's tanh on CPUs where MKL's tanh is slow: the same values and gradients."""
    x = (torch.randn(256, 64) * 4).requires_grad_()  # wide range: saturated and linear regions
    y = _SigmoidTanh.apply(x)
    torch.testing.assert_close(y, torch.tanh(x), atol=3e-7, rtol=0)
    upstream = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, upstream)
    (expected,) = torch.autograd.grad(torch.tanh(x), x, upstream)
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)


def test_tanh_takes_the_form_this_cpu_computes_faster() -> None:
    x = torch.randn(8, 4, requires_grad=True)
    through_sigmoid = "SigmoidTanh" in type(Tanh()(x).grad_fn).__name__
    assert through_sigmoid == sigmoid_tanh_is_faster()
    with torch.inference_mode():  # rollouts: torch's own kernel
        assert torch.equal(Tanh()(x), torch.tanh(x))


@pytest.mark.parametrize("kind, recurrent", [("mlp", False), ("lstm", True), (GRU, True), (RESIDUAL, False)])
def test_the_config_and_the_built_policy_agree_on_recurrent(kind: str, recurrent: bool) -> None:
    """One meaning of "recurrent": the policy's state holds numbers. The config, asked before any
    policy exists, says the same, so the buffer's sequence length K fits the policy."""
    config = PolicyConfig(kind=kind, hidden_sizes=[16], lstm_hidden_size=10)
    policy = vector_policy(OBS_DIM, spaces.Discrete(3), config)
    assert policy.recurrent == config.recurrent == recurrent
    assert Config(policy=config).sequence_length == (Config().ppo.sequence_length if recurrent else 1)


class MemorylessOnInstances(nn.Module):
    """A core without memory that says so only in `__init__`: the config cannot see it."""

    def __init__(self, input_size: int, policy: PolicyConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(input_size, 8)
        self.output_size, self.state_dims = 8, ()

    def forward(self, x, state, first):
        return self.linear(x), state


class MemoryOnInstances(GRUCore):
    """Declares no memory in the class body, then a GRU state in `__init__`."""

    state_dims = ()


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "MemorylessOnInstances",
            r"has no memory \(state_dims \(\)\) but its class does not declare it: write state_dims",
        ),
        ("MemoryOnInstances", r"declares state_dims = \(\) in the class body but \(1, None, 10\) on its instances"),
    ],
)
def test_a_core_whose_class_and_instances_disagree_on_memory_is_refused(name: str, message: str) -> None:
    config = PolicyConfig(kind=f"tests.test_policy:{name}", lstm_hidden_size=10)
    with pytest.raises(NetworkInterfaceError, match=rf"^{name} {message}"):
        vector_policy(OBS_DIM, spaces.Discrete(3), config)


ACTING_SPACES = {
    "vector": spaces.Box(-5.0, 5.0, (OBS_DIM,), dtype=np.float32),
    "image": spaces.Box(0, 255, (36, 36, 3), dtype=np.uint8),
    "dict": spaces.Dict(
        {"frame": spaces.Box(0, 255, (7, 7, 3), dtype=np.uint8), "pos": spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)}
    ),
}


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
@pytest.mark.parametrize("observation", ACTING_SPACES)
@pytest.mark.parametrize("action", ["discrete", "box"])
def test_acting_gives_the_actions_and_log_probs_of_the_modules_forward(kind: str, observation: str, action: str):
    """`act` (the fast path where the policy has one) against `step`, the modules' own forward,
    then the distribution: the same actions and log-probs from the same random draws, over a few
    steps (the recurrent state carried, episodes starting on the way)."""
    space = ACTING_SPACES[observation]
    spec = ObsSpec.from_space(space, "test")
    config = Config(policy=PolicyConfig(kind=kind, hidden_sizes=[32, 16], lstm_hidden_size=8))
    policy = build_policy(spec, ACTION_SPACES[action], config).requires_grad_(False)
    policy.preprocess.standardize.apply(lambda m: m.mean.normal_() if hasattr(m, "mean") else None)
    B = 6
    fast_rng, eager_rng = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.inference_mode():
        fast_hidden = eager_hidden = policy.initial_hidden(B)
        for t in range(4):
            obs = spec.batch(
                np.stack([space.sample() for _ in range(B)]) if observation != "dict" else _dict_batch(space, B)
            )
            first = torch.rand(B) < (1.0 if t == 0 else 0.3)
            action, logprob, value, fast_hidden = policy.act(obs, fast_hidden, first, generator=fast_rng)
            params, eager_value, eager_hidden = policy.step(obs, eager_hidden, first)
            eager_action = policy.dist.sample(params, eager_rng)
            torch.testing.assert_close(action, eager_action, atol=1e-6, rtol=0)  # discrete ones exactly
            torch.testing.assert_close(logprob, policy.dist.log_prob(params, eager_action), atol=1e-6, rtol=0)
            torch.testing.assert_close(value, eager_value, atol=1e-6, rtol=0)
            torch.testing.assert_close(fast_hidden, eager_hidden, atol=1e-6, rtol=0)


def _dict_batch(space: spaces.Dict, batch: int) -> dict[str, np.ndarray]:
    samples = [space.sample() for _ in range(batch)]
    return {key: np.stack([sample[key] for sample in samples]) for key in space}
