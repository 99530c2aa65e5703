"""Config models: every default lives here; YAML files in configs/ hold only what differs.

`load_config` reads a YAML file, applies `--set key.path=value` overrides and validates the
result, turning every problem into one `ConfigError` that names the key (the file is read by
trainer/core/yaml_files.py).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer.core.entry_points import ENTRY_POINT, load_entry_point
from trainer.core.errors import ConfigError
from trainer.core.yaml_files import parse_yaml, read_yaml


class Section(BaseModel):
    """Unknown keys are errors, so a typo never silently falls back to a default; so are inf and
    NaN for every float key (they would fail far from the config, or train on nonsense)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WrapperConfig(Section):
    name: str
    """A class in `gymnasium.wrappers` (`AtariPreprocessing`), one of the trainer's own
    (`EpisodicLife`, `FireReset`, see trainer/core/wrappers.py) or an entry point `package.module:Class`."""
    kwargs: dict[str, Any] = {}


class EnvConfig(Section):
    id: str = "CartPole-v1"
    """A gymnasium id (`CartPole-v1`; plugin ids such as `ALE/Pong-v5`, `MiniGrid-DoorKey-5x5-v0`
    and `MinAtar/Breakout-v1` register their package first), gymnasium's `module:EnvId`, or an
    entry point `package.module:Class`."""
    kwargs: dict[str, Any] = {}
    imports: list[str] = []
    """Modules imported (in every worker) before the env is made: plugins that register on import."""
    wrappers: list[WrapperConfig] = []
    """Gymnasium wrappers applied in order, in every worker and in evaluation and export."""
    max_episode_steps: int | None = Field(default=None, gt=0)
    """Time limit for entry-point envs (gymnasium ids take theirs from the registry)."""
    reward_threshold: float | None = None
    """Mean return that counts as solved; defaults to the env spec's `reward_threshold`."""
    on_error: Literal["stop", "reset"] = "stop"
    """An env that raises or returns NaN/inf: `stop` the run naming env, worker and step, or
    `reset` that env, record a zero-reward termination and count it (workers/env_failures)."""
    action_mask: Literal["auto", "observation", "info", "method", "off"] = "auto"
    """Where the env's invalid-action masks are: a key of its Dict observation, its info dict,
    or its `action_masks()` method (sb3-contrib's). `auto` looks in that order (the info of one
    reset) and the start says what it found; a masked policy samples only legal actions, in
    training, evaluation, `predict` and export. `off`: no masks."""
    action_mask_key: str = "action_mask"
    """The observation or info key that holds the mask."""

    @field_validator("action_mask", mode="before")
    @classmethod
    def _off_as_yaml_reads_it(cls, value: Any) -> Any:
        """YAML reads a bare `off` as false."""
        return "off" if value is False else value


class PolicyConfig(Section):
    kind: str = "mlp"
    """`mlp`: no memory; `lstm`: an LSTM core after the encoder and torso; or the entry point
    `package.module:Class` of your own core (docs/networks.md), which trains on sequences of
    ppo.sequence_length steps like the LSTM unless its class declares `state_dims = ()`."""
    encoder: str = "auto"
    """`auto`: a CNN per image leaf and the flat features of the others, concatenated; or the
    entry point `package.module:Class` of your own encoder (docs/networks.md)."""
    hidden_sizes: list[int] = [64, 64]
    """Torso layers after the encoder ([] puts the heads, or the LSTM, on the encoder's features)."""
    activation: Literal["tanh", "relu"] = "tanh"
    lstm_hidden_size: int = Field(default=128, gt=0)
    lstm_layers: int = Field(default=1, gt=0)
    cnn: Literal["auto", "nature", "small", "impala"] = "auto"
    """Encoder of image leaves: `auto` takes the Nature CNN for frames of 36 pixels a side and
    more (Atari's 84x84), else the small 3x3 CNN (MiniGrid 7x7, MinAtar 10x10)."""
    image_layout: Literal["auto", "chw", "hwc"] = "auto"
    """Where image channels are: `auto` takes the smallest dimension, first or last."""

    @property
    def recurrent(self) -> bool:
        """Whether the policy will have memory, and so train on sequences: told from the config for
        what is decided before any policy exists (the size checks at load, `Config.sequence_length`).
        A built policy's `recurrent` (its state holds numbers: spec.is_recurrent) is the truth,
        and this agrees with it: mlp has no memory, lstm has, and a custom core has unless its
        class declares `state_dims = ()`; build_core refuses a core whose instances disagree."""
        if self.kind in ("mlp", "lstm"):
            return self.kind == "lstm"
        return _declared_state_dims(self.kind) != ()

    @field_validator("kind", "encoder")
    @classmethod
    def _built_in_or_entry_point(cls, value: str, info) -> str:
        built_in = {"kind": ("mlp", "lstm"), "encoder": ("auto",)}[info.field_name]
        if value not in built_in and not ENTRY_POINT.match(value):
            raise ValueError(f"{' or '.join(built_in)}, or an entry point package.module:Class")
        return value

    @model_validator(mode="after")
    def _sizes_positive(self) -> PolicyConfig:
        if self.hidden_sizes and min(self.hidden_sizes) <= 0:
            raise ValueError(f"hidden_sizes must be a list of positive ints, got {self.hidden_sizes}")
        return self


def _declared_state_dims(entry_point: str) -> object:
    """What a custom core's class declares as `state_dims` (None where only its instances set it,
    or where it does not import: building the policy then says why)."""
    try:
        _, cls = load_entry_point(entry_point, lambda module_name, exc: exc)
    except ImportError:
        return None
    return getattr(cls, "state_dims", None)


class PPOConfig(Section):
    total_steps: int = Field(default=500_000, gt=0)
    rollout_steps: int = Field(default=128, gt=0)
    """T: steps each env takes per iteration."""
    sequence_length: int = Field(default=16, gt=0)
    """K: BPTT length of the training sequences of a policy with memory (one without, such as the
    MLP, trains on single steps)."""
    num_minibatches: int = Field(default=4, gt=0)
    update_epochs: int = Field(default=4, gt=0)
    lr: float = Field(default=2.5e-4, gt=0)
    anneal_lr: bool = True
    adam_eps: float = Field(default=1e-5, gt=0)
    gamma: float = Field(default=0.99, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    clip_coef: float = Field(default=0.2, gt=0)
    value_clip: float | None = Field(default=None, gt=0)
    """Clip the change of the value prediction to +-value_clip around the rollout's value; null: off."""
    ent_coef: float = Field(default=0.01, ge=0)
    vf_coef: float = Field(default=0.5, ge=0)
    max_grad_norm: float = Field(default=0.5, gt=0)
    target_kl: float | None = Field(default=None, gt=0)
    """Stop the epochs of an update early once approx KL exceeds this; null: never."""
    bootstrap_truncated: bool = True
    """Truncated episodes (time limits) bootstrap from the value of their final observation;
    false treats truncation as termination, as some trainers do (kept for comparisons)."""
    normalize_advantages: bool = True
    normalize_obs: bool = True
    obs_clip: float = Field(default=10.0, gt=0)
    normalize_rewards: bool = True
    """Scale rewards by the running std of the discounted return."""
    reward_clip: float = Field(default=10.0, gt=0)


class WorkersConfig(Section):
    num_workers: int = Field(default=2, gt=0)
    envs_per_worker: int = Field(default=8, gt=0)
    num_cpus: float = Field(default=1.0, gt=0)
    torch_threads: int = Field(default=1, gt=0)
    sample_timeout_s: float = Field(default=120.0, gt=0)
    """Ray only: a liveness limit, not a deadline. A worker is replaced when it takes no env step
    (or does not answer) for this long; a rollout may take as long as its steps need. Also how
    long a new worker process may take to start."""
    max_restarts: int = Field(default=3, ge=0)
    """Replacements of one worker in a row (failures without a good rollout between) before the
    run stops."""
    overlap: bool = False
    """Ray only: collect the next rollout while the learner updates. Faster when the learner
    has its own cores or GPU, at one policy version of lag (logged as perf/policy_lag);
    off keeps PPO exactly on-policy."""
    vector_env: Literal["sync", "async", "envpool"] = "sync"
    """How a worker steps its envs_per_worker envs: `sync`, one after another in the worker
    (best for fast envs, whose step is shorter than a message between processes); `async`, each
    in a subprocess of its own, all at once (gymnasium's AsyncVectorEnv): for slow or waiting
    envs (a remote simulator, a heavy physics step), one worker then drives many envs in the
    time of one step. Async subprocesses load the env but not torch (~0.1 s and a few tens of
    MiB each, against ~2 s and ~170 MiB for a worker). `envpool`: EnvPool's C++ envs for the ids
    it has (Atari, MuJoCo, classic control; the `atari` extra installs it), the
    config's Atari wrappers mapped onto its own options, a wrapper it has no option for refused;
    evaluation keeps the gymnasium env."""
    per_process: int = Field(default=1, gt=0)
    """Ray only: rollout workers sharing one actor process, each collecting on a thread of its
    own. For many workers on few cores with envs that wait (a simulator's latency, a remote
    service): 64 processes on 2 cores spend their time waking each other, 4 processes of 16 do
    not. Envs that keep a core busy gain nothing (one Python thread runs at a time). The process
    asks Ray for its workers' num_cpus and resources together; if it dies, its workers are
    replaced together."""
    resources: dict[str, float] = {}
    """Custom Ray resources each worker asks for, e.g. to pin workers to some nodes."""
    nice: int = Field(default=19, ge=0, le=19)
    """Ray only: how much lower the workers' CPU priority is than the learner's (a Unix nice
    increment on top of the niceness Ray starts workers at: 0 in the embedded Ray, 15 on a
    `ray start` node; 19 is the lowest). Where they share cores, the learner's update, which
    every iteration waits for, goes first; on a node of their own it changes nothing."""


class LearnerConfig(Section):
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    """`auto` picks CUDA when present, else CPU; or `cpu`, `cuda`, `cuda:N`, `mps`."""
    num_gpus: float = Field(default=0.0, ge=0)
    """GPUs the learner actor asks Ray for (ray execution); 0 on CPU-only clusters."""
    num_cpus: float = Field(default=1.0, gt=0)
    torch_threads: int = Field(default=1, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """The update's arithmetic. `bf16`: autocast over the policy's torso and core (weights,
    optimizer, heads and loss stay fp32), on a device with bf16 instructions (a CPU with
    AVX512-BF16 or AMX, an Ampere or newer GPU). `auto`: bf16 where the device has it and the
    policy has convolutions or recurrent layers (where it pays: a Nature CNN's update 1.7x
    faster, an LSTM's 1.3x; an MLP's not at all), else fp32. TensorBoard's `perf/learner_bf16`
    says which."""
    max_restarts: int = Field(default=3, ge=0)
    """Ray only: times a learner that dies (process killed, node lost) is rebuilt from its newest
    state and its iteration retried, in one session (a resume starts the count again); past it,
    the run stops naming the newest checkpoint. With several learners, the group is rebuilt."""
    num_learners: int = Field(default=1, gt=0)
    """Ray only: data-parallel learners, each an actor with learner.num_cpus / num_gpus, each
    holding the buffer of workers.num_workers / num_learners workers; together they compute
    what one learner computes (gradients all-reduced, advantages normalized over the whole
    minibatch). NCCL on CUDA, gloo on CPU."""
    actor_per_policy: bool = True
    """Ray, multi-agent runs with several policies: each policy's learner in an actor of its own
    (with its own num_learners ranks; the actors split learner.num_cpus and num_gpus evenly), the
    policies updating at the same time; false: one actor holds them all and updates them one after
    another (one process and one call an iteration). Measured (README): an actor per policy is
    1.1-1.25x the env steps/s with workers.overlap off, the same with it on."""
    placement: Literal["pack", "spread"] = "pack"
    """How a placement group puts several learners on nodes: `pack` (as few nodes as possible)
    or `spread` (one per node where they can)."""
    liveness_timeout_s: float = Field(default=60.0, gt=0)
    """Ray only: a learner (any rank) that answers no liveness probe for this long is taken as
    hung (a stopped process, a deadlock), killed and rebuilt like a dead one. The probe answers on
    a thread of its own, so an update may take as long as it needs."""
    collective_timeout_s: float = Field(default=120.0, gt=0)
    """Several learners: how long a collective waits for a rank before failing, so a rank that
    dies never hangs the others (the group is then rebuilt)."""


class ClusterConfig(Section):
    wait_for_resources_s: float = Field(default=0.0, ge=0)
    """Ray only: when the cluster cannot hold the learner and workers, wait this long for an
    autoscaler to add nodes (they are requested), printing what is pending; 0 fails at once."""


class EvalConfig(Section):
    every: int = Field(default=0, ge=0)
    """Iterations between evaluations during training (0: off). Under Ray an evaluation actor
    runs them beside training with the newest weights, never holding up the next iteration;
    inline, they run in between iterations. Logged as eval/* at the env step those weights were
    trained to; best.pt then follows the evaluation return."""
    episodes: int = Field(default=10, gt=0)
    deterministic: bool = True
    """Take the most likely action (logged as eval/return_mean), and also sample (logged as
    eval/stochastic_return_mean); false: only sample."""
    num_envs: int = Field(default=1, gt=0)
    """Envs stepped at once; env i runs (episodes + i) // num_envs of the episodes."""
    seed: int = Field(default=12345, ge=0, le=2**64 - 1)
    """Env i is reset with seed + i at the start of every evaluation: each one sees the same episodes.
    At most 2**64 - 1: it also seeds the torch generator of sampled actions."""
    env: dict[str, Any] = {}
    """Keys of `env` that evaluation replaces, e.g. `{wrappers: [...]}` without EpisodicLife or
    reward clipping on Atari; observations and actions must stay as in training."""
    video_every: int = Field(default=0, ge=0)
    """Record the first episode of every Nth evaluation as an MP4 in RUN_DIR/videos/ and as an
    animation in TensorBoard (eval/video); 0: never. Needs the video extra."""
    num_cpus: float = Field(default=1.0, gt=0)
    """Ray only: CPUs the evaluation actor asks for."""
    opponent: str | None = None
    """Multi-agent with self_play: evaluate the trained policy against `random` (uniformly random
    legal actions) or `CHECKPOINT[:policy]` (another run's policy) playing the opponents' seats,
    in every seat it trains in; logged as eval/win_rate, draw_rate, loss_rate, overall and per
    seat. Unset: every agent acts with its own policy."""


class LoggingConfig(Section):
    dir: str = "runs"
    """Parent of the run directories (`<dir>/<env>__<config name>__<seed>__<time>`)."""
    tensorboard: bool = True
    progress_interval_s: float = Field(default=10.0, gt=0)
    """Seconds between plain progress lines when the output is not a terminal."""


class CheckpointConfig(Section):
    every: int = Field(default=50, ge=0)
    """Iterations between checkpoints (0: only the final one)."""
    keep_last: int = Field(default=3, gt=0)
    """Periodic checkpoints kept on disk; best.pt (highest mean return) is kept besides."""


class SelfPlayConfig(Section):
    """Multi-agent: one policy trains against frozen past snapshots of itself."""

    policy: str = "shared"
    """The policy that trains; its `opponents` agents act with snapshots from the pool."""
    opponents: list[str] = Field(min_length=1)
    """Agent-name patterns (fnmatch) of the seats the pool's snapshots play, e.g. [player_2]."""
    pool_size: int = Field(default=10, gt=0)
    """Snapshots kept (the oldest leaves first); the pool starts with the initial policy."""
    add_every: int = Field(default=10, gt=0)
    """Iterations between snapshots added to the pool."""
    sample: Literal["uniform", "latest", "win_rate"] = "uniform"
    """Which snapshot plays an episode: any, the newest, or the ones the policy beats least
    often (weight 1 - its win rate against each)."""
    swap_seats: bool = True
    """Trained and frozen sides swap agents every other episode of each env, so the policy
    learns every seat of an asymmetric game (who moves first, say)."""
    keep_initial: bool = False
    """The initial policy stays in the pool for good (past pool_size the oldest other snapshot
    leaves): some games keep reaching the positions an untrained player makes."""


class Config(Section):
    name: str = "run"
    """Short config name used in run directory names; load_config sets it from the file name."""
    seed: int = Field(default=1, ge=0)
    """Any size (a nanosecond timestamp too): each process's seed is derived from it (`derive_seed`)."""
    execution: Literal["inline", "ray"] = "ray"
    """`ray`: worker and learner actors (embedded local Ray unless an address is given);
    `inline`: everything in this process, for debugging and profiling."""
    env: EnvConfig = EnvConfig()
    policy: PolicyConfig = PolicyConfig()
    ppo: PPOConfig = PPOConfig()
    workers: WorkersConfig = WorkersConfig()
    learner: LearnerConfig = LearnerConfig()
    cluster: ClusterConfig = ClusterConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    policies: dict[str, dict[str, Any]] = {}
    """Multi-agent (PettingZoo) envs: policy name -> keys of `policy` it changes (`kind`,
    `hidden_sizes`, ...), plus a `ppo` mapping of the PPO keys it changes. Each policy has its
    own network, normalizer, buffer and optimizer. Empty: one policy, `shared`, for every agent."""
    policy_mapping: dict[str, str] = {}
    """Agent-name pattern (fnmatch, `speaker*`) -> policy name; the first match wins. May be
    left out with one policy (every agent acts with it)."""
    self_play: SelfPlayConfig | None = None
    """Multi-agent: a policy trains against a pool of its own past snapshots (see SelfPlayConfig)."""

    def policy_config(self, name: str, agents_per_env: int) -> Config:
        """This config as policy `name` of a multi-agent run sees it: its `policy` and `ppo`
        keys changed as `policies` says, and each worker's envs x the policy's agents in each env
        as its `envs_per_worker` (what its learner's buffer holds a column for); ppo.total_steps
        scaled alike, so learning-rate annealing follows the run's env steps."""
        overrides = dict(self.policies.get(name, {}))
        ppo = overrides.pop("ppo", {}) or {}
        raw = self.model_dump()
        raw["policy"] = {**raw["policy"], **overrides}
        raw["ppo"] = {**raw["ppo"], **ppo}
        raw["ppo"]["total_steps"] *= agents_per_env
        raw["workers"]["envs_per_worker"] *= agents_per_env
        raw["policies"], raw["policy_mapping"], raw["self_play"] = {}, {}, None
        return Config.model_validate(raw)

    @property
    def total_envs(self) -> int:
        """N: envs across all workers."""
        return self.workers.num_workers * self.workers.envs_per_worker

    @property
    def steps_per_iteration(self) -> int:
        return self.ppo.rollout_steps * self.total_envs

    @property
    def sequence_length(self) -> int:
        """K used by the buffer: a policy with memory trains on sequences, one without on single steps."""
        return self.ppo.sequence_length if self.policy.recurrent else 1

    @property
    def num_sequences(self) -> int:
        return self.ppo.rollout_steps // self.sequence_length * self.total_envs

    @property
    def eval_env(self) -> EnvConfig:
        """The env evaluation runs: `env` with the keys `eval.env` replaces."""
        return EnvConfig.model_validate({**self.env.model_dump(), **self.eval.env})

    @model_validator(mode="after")
    def _eval_env_valid(self) -> Config:
        try:
            self.eval_env  # noqa: B018 - validated here, so a bad key fails at load with its name
        except ValidationError as exc:
            problems = "; ".join(f"eval.env.{_describe(err)}" for err in exc.errors())
            raise ValueError(problems) from None
        return self

    @model_validator(mode="after")
    def _async_envs_stop_on_error(self) -> Config:
        vector_env = self.workers.vector_env
        if vector_env != "sync" and self.env.on_error == "reset":
            raise ValueError(
                f"env.on_error: reset needs workers.vector_env: sync (an {vector_env} vector env cannot reset one "
                "failed env on its own); use one of them"
            )
        return self

    @model_validator(mode="after")
    def _policies_valid(self) -> Config:
        """Every policy's keys are valid keys of `policy` and `ppo`, and every mapping names a policy."""
        problems = []
        for name, overrides in self.policies.items():
            if not isinstance(overrides, dict) or not isinstance(overrides.get("ppo", {}) or {}, dict):
                problems.append(f"policies.{name}: must map keys of `policy` (and `ppo`) to values")
                continue
            ppo = overrides.get("ppo") or {}
            policy = {key: value for key, value in overrides.items() if key != "ppo"}
            for section, model, changed in (("", PolicyConfig, policy), ("ppo.", PPOConfig, ppo)):
                base = getattr(self, "ppo" if section else "policy").model_dump()
                try:
                    model.model_validate({**base, **changed})
                except ValidationError as exc:
                    problems += [f"policies.{name}.{section}{_describe(err)}" for err in exc.errors()]
        for pattern, name in self.policy_mapping.items():
            if name not in self.policies:
                known = ", ".join(self.policies) or "none: add a `policies` section"
                problems.append(f"policy_mapping[{pattern!r}]: no policy {name!r} in `policies` (they are: {known})")
        if self.self_play is not None and self.self_play.policy not in (self.policies or {"shared": {}}):
            known = ", ".join(self.policies or ["shared"])
            problems.append(f"self_play.policy: no policy {self.self_play.policy!r} (they are: {known})")
        if self.policies and len(self.policies) > 1 and not self.policy_mapping:
            problems.append("policies: with several policies, policy_mapping must say which agents act with which")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _learners_fit(self) -> Config:
        learners, workers = self.learner.num_learners, self.workers.num_workers
        if learners > 1 and self.execution != "ray":
            raise ValueError(f"learner.num_learners={learners} needs execution: ray (inline runs one learner)")
        if workers % learners:
            raise ValueError(
                f"workers.num_workers ({workers}) must be a multiple of learner.num_learners ({learners}): "
                "each learner holds the rollouts of the same number of workers"
            )
        return self

    @model_validator(mode="after")
    def _sizes_fit(self) -> Config:
        ppo = self.ppo
        if self.policy.recurrent and ppo.rollout_steps % ppo.sequence_length:
            raise ValueError(
                f"ppo.sequence_length ({ppo.sequence_length}) must divide ppo.rollout_steps ({ppo.rollout_steps})"
            )
        if self.num_sequences % ppo.num_minibatches:
            unit = "sequences" if self.policy.recurrent else "samples"
            raise ValueError(
                f"ppo.num_minibatches ({ppo.num_minibatches}) must divide the {self.num_sequences} {unit} "
                f"of one iteration (rollout_steps x num_workers x envs_per_worker)"
            )
        return self


def _opaque_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found |= _opaque_fields(kind, f"{prefix}{name}.")
        elif get_origin(kind) is dict:
            found.add(f"{prefix}{name}")
    return found


OPAQUE_FIELDS = frozenset(_opaque_fields(Config))
"""The settings typed as a mapping (env.kwargs, workers.resources, eval.env): their keys are the
user's (the env's arguments, Ray resource names, the env keys evaluation replaces), not config
keys. Each is one value wherever the config is walked: logged as hparams, compared on resume;
a sweep may set it whole or any key inside it. (Lists, env.wrappers, are one value too.)"""


def is_opaque(path: str) -> bool:
    """Whether the dotted `path` is an opaque setting or a key inside one (`env.kwargs.seed`)."""
    return any(path == field or path.startswith(f"{field}.") for field in OPAQUE_FIELDS)


def load_config(source: str | Path | dict | Config, overrides: str | Sequence[str] = ()) -> Config:
    """Build a validated Config from a YAML path, a dict or a Config, plus `key.path=value`
    overrides (a single string is one override)."""
    if isinstance(source, Config):
        raw, name = source.model_dump(), source.name
    elif isinstance(source, dict):
        raw, name = copy.deepcopy(source), source.get("name", "run")  # overrides must not edit the caller's
    else:
        path = Path(source)
        raw, name = _read_config_file(path), path.stem
    raw = {"name": name, **raw}
    for item in [overrides] if isinstance(overrides, str) else overrides:
        _apply_override(raw, item)
    return validate_config(raw, origin=str(source) if isinstance(source, str | Path) else "config")


def validate_config(raw: dict, origin: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"invalid config ({origin}): " + "; ".join(problems)) from None


def dump_config(config: Config) -> str:
    """The resolved config as YAML: every key, defaults included."""
    return yaml.safe_dump(config.model_dump(), sort_keys=False)


def _read_config_file(path: Path) -> dict:
    raw = read_yaml(path)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key.path=value, e.g. ppo.lr=1e-3")
    value = parse_yaml(text, f"override {item!r}: value {text!r}")
    set_key(raw, key, value, what=f"override {item!r}")


def set_key(raw: dict, key: str, value: Any, what: str = "") -> None:
    """Set `section.key` in a raw config mapping, making the sections it needs."""
    parts = key.split(".")
    if "" in parts:
        raise ConfigError(
            f"{what or key}: the key path {key!r} has an empty part; write it as section.key, e.g. ppo.lr"
        )
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what or key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and not err["loc"]:
        return message
    return f"{key}: {message} (got {err.get('input')!r})"
