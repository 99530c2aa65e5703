"""Your own encoder (`policy.encoder`) or core (`policy.kind`), given as `package.module:Class`,
checked against the interface of docs/networks.md when the policy is built: a class that breaks
it stops the run at start in one line naming the attribute or method.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.core.config import PolicyConfig
from trainer.core.entry_points import load_entry_point
from trainer.core.errors import UserError
from trainer.core.spec import is_recurrent, state_shape

CHECK_T, CHECK_B = 3, 2  # the dummy sequence a core is tried on: 3 steps of 2 envs


class NetworkInterfaceError(UserError):
    """A custom encoder or core that cannot be loaded or does not keep to the interface."""


def load_class(entry_point: str, key: str) -> type[nn.Module]:
    def cannot_import(module_name: str, exc: ImportError) -> NetworkInterfaceError:
        return NetworkInterfaceError(f"{key} {entry_point!r}: cannot import {module_name!r} ({exc})")

    module_name, _, name = entry_point.partition(":")
    _, cls = load_entry_point(entry_point, cannot_import)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise NetworkInterfaceError(f"{key} {entry_point!r}: {module_name} has no torch.nn.Module subclass {name!r}")
    return cls


def build_core(policy: PolicyConfig, input_size: int) -> nn.Module:
    """`Class(input_size, policy_config)`, with its `output_size` and `state_dims` checked and
    its forward tried on a short sequence with an episode start inside."""
    cls = load_class(policy.kind, "policy.kind")
    name = cls.__name__
    core = _construct(cls, "policy.kind", input_size, policy)
    output_size = _declared_size(core, name)
    dims = getattr(core, "state_dims", None)
    if not isinstance(dims, tuple) or (dims and (dims.count(None) != 1 or not _sizes(dims))):
        raise NetworkInterfaceError(
            f"{name} declares no valid state_dims (got {dims!r}): set state_dims = () for a core without "
            "memory, or the recurrent state's dims with None at the batch axis, e.g. (1, None, 64)"
        )
    _expect_memory_as_configured(core, policy, name)
    state = torch.zeros(state_shape(core_state_dims(core), CHECK_B))
    first = torch.zeros(CHECK_T, CHECK_B, dtype=torch.bool)
    first[0], first[1, 0] = True, True
    with torch.no_grad():
        try:
            result = core(torch.zeros(CHECK_T, CHECK_B, input_size), state, first)
        except Exception as exc:
            raise NetworkInterfaceError(f"{name}.forward(x, state, first) raised {type(exc).__name__}: {exc}") from None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise NetworkInterfaceError(f"{name}.forward must return (features, state), got {type(result).__name__}")
    features, new_state = result
    _expect_shape(features, (CHECK_T, CHECK_B, output_size), f"{name}.forward returned features", "[T, B, output_size]")
    if dims:
        _expect_shape(new_state, tuple(state.shape), f"{name}.forward returned a state", "state_dims with B")
    return core


def core_state_dims(core: nn.Module) -> tuple[int | None, ...]:
    """The state dims the trainer allocates for a core: its own, or (None, 0), an empty `[B, 0]`
    state, for a core without memory."""
    return tuple(core.state_dims) or (None, 0)


def _expect_memory_as_configured(core: nn.Module, policy: PolicyConfig, name: str) -> None:
    """The config decided from the class whether the core has memory (PolicyConfig.recurrent:
    sequences or single steps); the built core's state must say the same."""
    dims = core.state_dims
    if is_recurrent(core_state_dims(core)) == policy.recurrent:
        return
    if policy.recurrent:
        raise NetworkInterfaceError(
            f"{name} has no memory (state_dims {dims!r}) but its class does not declare it: write state_dims = () "
            "in the class body, so the config knows before building it that the core trains on single steps"
        )
    raise NetworkInterfaceError(
        f"{name} declares state_dims = () in the class body but {dims!r} on its instances; declare the recurrent "
        "state's dims in one place"
    )


def build_encoder(policy: PolicyConfig, spec, preprocess: nn.Module, example: dict[str, torch.Tensor]) -> nn.Module:
    """`Class(obs_spec, policy_config)`, with its `output_size` checked on the preprocessed leaves
    of a batch of example observations."""
    cls = load_class(policy.encoder, "policy.encoder")
    name = cls.__name__
    encoder = _construct(cls, "policy.encoder", spec, policy)
    output_size = _declared_size(encoder, name)
    with torch.no_grad():
        try:
            features = encoder(preprocess(example))
        except Exception as exc:
            raise NetworkInterfaceError(f"{name}.forward(features) raised {type(exc).__name__}: {exc}") from None
    batch = next(iter(example.values())).shape[:2]
    _expect_shape(features, (*batch, output_size), f"{name}.forward returned", "[T, B, output_size]")
    return encoder


def _construct(cls: type[nn.Module], key: str, *args) -> nn.Module:
    try:
        return cls(*args)
    except Exception as exc:
        raise NetworkInterfaceError(
            f"{key}: {cls.__name__}({', '.join(type(a).__name__ for a in args)}) raised {type(exc).__name__}: {exc}"
        ) from None


def _declared_size(module: nn.Module, name: str) -> int:
    size = getattr(module, "output_size", None)
    if not isinstance(size, int) or size <= 0:
        raise NetworkInterfaceError(
            f"{name} declares no output_size (got {size!r}): set it to the width of the features forward returns"
        )
    return size


def _sizes(dims: tuple) -> bool:
    return all(d is None or (isinstance(d, int) and d >= 0) for d in dims)


def _expect_shape(value, shape: tuple[int, ...], what: str, layout: str) -> None:
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise NetworkInterfaceError(f"{what} {got}, expected {shape} ({layout})")
