"""Observation specs, preprocessing and encoders: which leaves a space gives, HWC and CHW images,
the CNN picked by frame size, one-hot and /255 features, and a policy over a Dict of an image,
a discrete and a vector leaf whose gradients reach every encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from trainer.core.config import Config, PolicyConfig
from trainer.core.encoders import ObsEncoder, pick_cnn
from trainer.core.policy import build_policy
from trainer.core.preprocessing import ObsPreprocessor
from trainer.core.spec import ObsSpec, state_shape


def image(*shape: int, dtype=np.uint8) -> spaces.Box:
    return spaces.Box(0, 255 if dtype == np.uint8 else 1, shape, dtype=dtype)


def test_leaves_of_nested_dict_and_tuple_spaces() -> None:
    space = spaces.Dict(
        {
            "pixels": image(7, 7, 3),
            "pos": spaces.Box(-1, 1, (2, 3)),
            "inner": spaces.Tuple((spaces.Discrete(4, start=1), spaces.MultiBinary(3))),
            "goal": spaces.MultiDiscrete([2, 5]),
            "mission": spaces.Text(8),
        }
    )
    spec = ObsSpec.from_space(space, "Nested-v0")
    kinds = {leaf.key: (leaf.kind, leaf.shape, leaf.dtype) for leaf in spec.leaves}
    assert kinds == {
        "pixels": ("image", (7, 7, 3), torch.uint8),
        "pos": ("vector", (2, 3), torch.float32),
        "inner/0": ("discrete", (), torch.long),
        "inner/1": ("binary", (3,), torch.uint8),
        "goal": ("multidiscrete", (2,), torch.long),
    }
    assert spec.dropped == ("mission",)
    sample = space.sample()
    batch = spec.stack([sample, sample])
    assert batch["inner/0"].tolist() == [sample["inner"][0]] * 2
    assert spec.mismatch(sample) is None


@pytest.mark.parametrize(
    "space, layout, chw",
    [
        (image(84, 84, 3), "auto", (3, 84, 84)),  # HWC frame
        (image(4, 84, 84), "auto", (4, 84, 84)),  # stacked gray frames, CHW
        (image(84, 84), "auto", (1, 84, 84)),  # one gray frame
        (image(10, 10, 4, dtype=np.bool_), "auto", (4, 10, 10)),  # MinAtar's boolean grid
        (image(3, 3, 5), "hwc", (5, 3, 3)),  # ambiguous: the config decides
    ],
)
def test_images_come_out_channels_first_and_scaled(space: spaces.Box, layout: str, chw: tuple) -> None:
    spec = ObsSpec.from_space(space, "Img-v0", layout)
    (leaf,) = spec.leaves
    assert leaf.kind == "image" and leaf.image_shape == chw
    raw = torch.as_tensor(np.stack([space.sample() for _ in range(2)]))
    features = ObsPreprocessor(spec, normalize=True, clip=10.0)({"obs": raw})["obs"]
    assert features.shape == (2, *chw) and features.dtype == torch.float32
    scale = 255.0 if space.dtype == np.uint8 else 1.0
    expected = raw.float() / scale
    if len(space.shape) == 2:
        expected = expected.unsqueeze(1)
    elif not leaf.channels_first:
        expected = expected.permute(0, 3, 1, 2)
    torch.testing.assert_close(features, expected)


def test_discrete_leaves_become_one_hot_from_their_start() -> None:
    space = spaces.Dict({"d": spaces.Discrete(3, start=-1), "m": spaces.MultiDiscrete([2, 3], start=[1, 0])})
    spec = ObsSpec.from_space(space, "Disc-v0")
    features = ObsPreprocessor(spec, normalize=True, clip=10.0)(
        {"d": torch.tensor([-1, 1]), "m": torch.tensor([[1, 2], [2, 0]])}
    )
    assert features["d"].tolist() == [[1, 0, 0], [0, 0, 1]]
    assert features["m"].tolist() == [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]]


@pytest.mark.parametrize("shape, choice, picked, out", [
    ((4, 84, 84), "auto", "nature", 512), ((7, 7, 3), "auto", "small", 256), ((3, 64, 64), "impala", "impala", 256),
])  # fmt: skip
def test_cnn_by_frame_size_or_choice(shape, choice, picked, out) -> None:
    spec = ObsSpec.from_space(image(*shape), "Img-v0")
    assert pick_cnn(spec.leaves[0], choice) == picked
    encoder = ObsEncoder(spec, choice)
    chw = spec.leaves[0].image_shape
    assert encoder.output_size == out
    assert encoder({"obs": torch.rand(5, 2, *chw)}).shape == (5, 2, out)  # any leading dims


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_dict_policy_trains_every_encoder(kind: str) -> None:
    space = spaces.Dict({"img": image(7, 7, 3), "dir": spaces.Discrete(4), "vel": spaces.Box(-1, 1, (2,))})
    spec = ObsSpec.from_space(space, "Dict-v0")
    config = Config(policy=PolicyConfig(kind=kind, hidden_sizes=[32], lstm_hidden_size=16))
    policy = build_policy(spec, spaces.Discrete(3), config)
    K, B = 4, 3
    obs = spec.stack([space.sample() for _ in range(K * B)])
    obs = {key: x.reshape(K, B, *x.shape[1:]) for key, x in obs.items()}
    first = torch.zeros(K, B, dtype=torch.bool)
    hidden = torch.zeros(state_shape(policy.state_dims, B))
    logprob, entropy, value = policy.evaluate_actions(obs, torch.randint(0, 3, (K, B, 1)), hidden, first)
    assert logprob.shape == entropy.shape == value.shape == (K, B)
    (logprob.sum() + value.sum()).backward()
    conv = policy.encoder.cnns["img"][0].weight
    assert conv.grad is not None and conv.grad.abs().sum() > 0
