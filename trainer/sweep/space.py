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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel

from trainer.core.config import Config, ConfigError, load_config, set_key

SAMPLERS = ("choice", "uniform", "loguniform", "randint", "grid")


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

    @property
    def mutable(self) -> bool:
        """PBT can perturb it (a grid axis stays fixed per trial: it is what the trials compare)."""
        return self.sampler != "grid"


def load_space(path: str | Path, base: dict) -> list[Axis]:
    """Read SPACE.yaml and check it against `base` (the raw config, overrides applied): every key
    is a config key, every sampler one of SAMPLERS with arguments it takes, and the config with
    each edge value of each key validates as `train` would."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpaceError(f"{path} is not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{path} must map config keys to samplers, e.g. 'ppo.lr: {{loguniform: [1.0e-4, 1.0e-2]}}'")
    axes = [_axis(path, str(key), spec) for key, spec in raw.items()]
    for axis in axes:
        for value in axis.values:  # every listed value; both ends of a range
            try:
                trial_config(base, {axis.key: value})
            except ConfigError as exc:
                raise SpaceError(f"{path}: {axis.key}={value!r} gives an invalid config: {_problems(exc)}") from None
    return axes


def trial_config(base: dict, values: dict) -> Config:
    """The base config (a raw mapping, overrides applied) with a trial's sampled values."""
    raw = copy.deepcopy(base)
    for key, value in values.items():
        set_key(raw, key, value)
    return load_config(raw)


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
    return Axis(key, sampler, values)


def _example(sampler: str) -> str:
    return {"randint": "[2, 8]", "uniform": "[0.1, 0.3]", "loguniform": "[1.0e-4, 1.0e-2]"}.get(sampler, "[a, b]")


def _problems(exc: ConfigError) -> str:
    return str(exc).split("): ", 1)[-1]


def is_config_key(key: str) -> bool:
    """A dotted path to a setting of Config (a key inside a mapping setting such as env.kwargs
    counts: its keys are the env's)."""
    model: type[BaseModel] = Config
    parts = key.split(".")
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            model = kind
            continue
        return index == len(parts) - 1 or get_origin(kind) is dict
    return False  # a whole section
