"""A sweep's search space: SPACE.yaml maps config keys (`ppo.lr`) to one sampler each, read and
checked against the base config before any trial starts, then handed to Ray Tune.

    ppo.lr: {loguniform: [1.0e-4, 3.0e-3]}
    ppo.clip_coef: {uniform: [0.1, 0.3]}
    ppo.update_epochs: {randint: [2, 8]}     # both ends included
    policy.hidden_sizes: {choice: [[64, 64], [128, 128]]}
    seed: {grid: [1, 2, 3]}                  # every trial of the sweep runs once per value
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from trainer.core.config import Config, ConfigError, is_opaque, load_config, set_key
from trainer.core.yaml_files import read_yaml

SAMPLERS = ("choice", "uniform", "loguniform", "randint", "grid")
RANDINT_CHECKED = 1000  # each check is a config validation, ~0.1 ms


class SpaceError(ConfigError):
    """SPACE.yaml names a key or sampler that does not exist, or values a trial's config refuses."""


@dataclass(frozen=True)
class Axis:
    """One swept key: its sampler and the sampler's arguments."""

    key: str
    sampler: str
    values: list

    def to_tune(self):
        from ray import tune

        if self.sampler == "choice":
            return tune.choice(self.values)
        if self.sampler == "grid":
            return tune.grid_search(self.values)
        if self.sampler == "randint":
            return tune.randint(self.values[0], self.values[1] + 1)  # Tune's upper end is exclusive
        low, high = self.values
        return tune.loguniform(low, high) if self.sampler == "loguniform" else tune.uniform(low, high)

    def checked_values(self) -> list:
        """What load_space checks before any trial: each listed value, both ends of a range, and
        every integer of a randint up to RANDINT_CHECKED of them (a wider one: each trial's draw)."""
        low, high = self.values[0], self.values[-1]
        if self.sampler == "randint" and high - low < RANDINT_CHECKED:
            return [low, high, *range(low + 1, high)]
        return list(self.values)

    @property
    def mutable(self) -> bool:
        """PBT can perturb it (a grid axis stays fixed per trial: it is what the trials compare)."""
        return self.sampler != "grid"


def load_space(path: str | Path, base: dict) -> list[Axis]:
    """Read SPACE.yaml and check it against `base` (the raw config, overrides applied): every key
    is a config key, every sampler one of SAMPLERS with arguments it takes, and the config with
    each value of `Axis.checked_values` validates as `train` would."""
    path = Path(path)
    raw = _read_space(path)
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{path} must map config keys to samplers, e.g. 'ppo.lr: {{loguniform: [1.0e-4, 1.0e-2]}}'")
    axes = [_axis(path, str(key), spec) for key, spec in raw.items()]
    for axis in axes:
        for value in axis.checked_values():
            if (refusal := _refusal(base, {axis.key: value})) is not None:
                raise SpaceError(
                    f"{path}: {axis.key}={value!r} gives an invalid config: {refusal}{_instead(axis, value, base)}"
                )
    return axes


def trial_config(base: dict, values: dict) -> Config:
    """The base config (a raw mapping, overrides applied) with a trial's sampled values."""
    raw = copy.deepcopy(base)
    for key, value in values.items():
        set_key(raw, key, value)
    return load_config(raw)


def sampled_config(base: dict, values: dict, axes: list[Axis], space: str) -> Config:
    """A trial's config, or a SpaceError naming its values and their samplers: load_space checks
    each value alone, so a combination, an integer inside a wide randint or a value PBT perturbed
    can still be refused (that trial fails with this line; the sweep goes on)."""
    try:
        return trial_config(base, values)
    except ConfigError as exc:
        drawn = ", ".join(f"{a.key}={values[a.key]!r} ({a.sampler} {a.values})" for a in axes if a.key in values)
        raise SpaceError(f"{space}: the trial's {drawn} give an invalid config: {_problems(exc)}") from None


def _read_space(path: Path) -> Any:
    return read_yaml(path, "search space file", SpaceError)


def _refusal(base: dict, values: dict) -> str | None:
    """What the config says against these values, or None where it takes them."""
    try:
        trial_config(base, values)
    except ConfigError as exc:
        return _problems(exc)
    return None


def _problems(exc: ConfigError) -> str:
    return str(exc).split("): ", 1)[-1]  # without its 'invalid config (origin): ' head


def _instead(axis: Axis, value: Any, base: dict) -> str:
    """For an integer the config refuses inside a randint: the integers it takes, as a choice."""
    if axis.sampler != "randint" or value in axis.values:
        return ""
    taken = [v for v in axis.checked_values() if _refusal(base, {axis.key: v}) is None]
    listed = f", {{choice: {sorted(taken)}}}" if len(taken) <= 16 else f" ({len(taken)} of them) as a choice"
    return f"; randint {axis.values} draws every integer between: give the ones the config takes{listed}"


def _axis(path: Path, key: str, spec: Any) -> Axis:
    if not is_config_key(key):
        raise SpaceError(
            f"{path}: {key!r} is not a config key; use a dotted key of the config (e.g. ppo.lr, ppo.clip_coef, seed)"
        )
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
        raise SpaceError(
            f"{path}: {key}: {spec!r} is not a sampler; give one of {', '.join(SAMPLERS)}, e.g. "
            f"'{key}: {{choice: [a, b]}}'"
        )
    sampler, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{path}: {key}: {sampler} takes a list, e.g. {{{sampler}: {_example(sampler)}}}")
    if sampler in ("uniform", "loguniform", "randint"):
        number = int if sampler == "randint" else (int, float)
        if len(values) != 2 or not all(isinstance(v, number) and not isinstance(v, bool) for v in values):
            raise SpaceError(f"{path}: {key}: {sampler} takes [low, high], e.g. {{{sampler}: {_example(sampler)}}}")
        if values[0] > values[1] or (sampler != "randint" and values[0] == values[1]):
            raise SpaceError(f"{path}: {key}: {sampler} needs low < high, got {values}")
        if sampler == "loguniform" and values[0] <= 0:
            raise SpaceError(f"{path}: {key}: loguniform needs low > 0, got {values}")
        if sampler != "randint" and _takes_integers(key):
            whole = [math.ceil(values[0]), max(math.ceil(values[0]), math.floor(values[1]))]
            raise SpaceError(
                f"{path}: {key}: {sampler} draws fractional numbers and {key} takes whole numbers; "
                f"use {{randint: {whole}}} (both ends included)"
            )
    return Axis(key, sampler, values)


def _example(sampler: str) -> str:
    return {"randint": "[2, 8]", "uniform": "[0.1, 0.3]", "loguniform": "[1.0e-4, 1.0e-2]"}.get(sampler, "[a, b]")


def _takes_integers(key: str) -> bool:
    """Whether the config key `key` (see is_config_key) is an int (or an int or null)."""
    if is_opaque(key):
        return False  # a key inside a mapping setting (env.kwargs): its type is the env's
    model: type[BaseModel] = Config
    *sections, name = key.split(".")
    for part in sections:
        model = model.model_fields[part].annotation
    kind = model.model_fields[name].annotation
    return kind is int or set(get_args(kind)) == {int, type(None)}


def is_config_key(key: str) -> bool:
    """A dotted path to a setting of Config, or to a key inside an opaque one (`env.kwargs.seed`:
    its keys are the env's, see OPAQUE_FIELDS)."""
    if is_opaque(key):
        return True
    model: type[BaseModel] = Config
    parts = key.split(".")
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        kind = field.annotation
        if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
            return index == len(parts) - 1
        model = kind
    return False  # a whole section
