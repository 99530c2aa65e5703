"""A trained policy for scripts: `trainer.load_policy(run_dir | checkpoint | .pt2).predict(obs)`.

`predict` takes numpy observations as the env gives them, one or a batch, with the saved
preprocessing (observation normalizer, /255, one-hot) applied inside, and returns env actions:
the same acting code as the workers (trainer/core/acting.py); what it cannot act on (a shape,
dtype, NaN, state or episode_start that does not fit) it refuses in one line. A checkpoint loads
on the CPU wherever it was written; an exported `.pt2` (written by trainer/export.py, read here)
runs without our network classes, deterministically. Which of the two a file is, its content
says, not its name.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from gymnasium import spaces
from torch import nn

from trainer.core.acting import Acting
from trainer.core.action_masks import WRAPPED_KEY, describe_source, mask_sizes, no_legal_action
from trainer.core.agents import probe_agents
from trainer.core.config import Config, load_config
from trainer.core.envs import probe_env
from trainer.core.errors import UserError
from trainer.core.policy import ActorCritic, build_policy
from trainer.core.spec import ROOT, ObsLeaf, ObsSpec, is_recurrent, pick_leaf, state_shape
from trainer.runtime.agent_checkpoints import checkpoint_policy
from trainer.runtime.checkpoint import CheckpointError, check_spaces, load_checkpoint

EXPORTED, CHECKPOINT = "exported program", "checkpoint"
CONFIG_FILE, META_FILE = "config.yaml", "meta.json"  # the extra files of an exported program


class PredictError(UserError):
    """An observation, state or episode_start that `predict` cannot act on."""


class ExportedNetwork:
    """An exported program behind the acting interface of ActorCritic (deterministic only). The
    program is ActorCritic.step (trainer/export.py:InferencePolicy), taking a plain Box's
    observation as its tensor."""

    def __init__(self, module, state_dims: tuple[int | None, ...], single: bool) -> None:
        self.module, self.state_dims, self.single = module, state_dims, single

    def initial_hidden(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(state_shape(self.state_dims, batch_size))

    def act(self, obs, hidden, first, deterministic=True, generator=None):
        if not deterministic:
            raise UserError("an exported .pt2 policy only takes its most likely action; load the checkpoint to sample")
        action, hidden = self.module(obs[ROOT] if self.single else obs, hidden, first)
        return action, None, None, hidden


@dataclass
class Policy:
    """A trained policy: `predict`, the spaces it acts on, and where it came from."""

    network: ActorCritic | ExportedNetwork
    obs_spec: ObsSpec
    observation_space: spaces.Space
    action_space: spaces.Space
    config: Config
    path: Path
    iteration: int | None = None  # of the checkpoint (None for an exported program)
    seed: int = 0
    name: str | None = None  # the policy's, in a multi-agent run (whose config `config` is)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def recurrent(self) -> bool:
        return is_recurrent(self.network.state_dims)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True, action_mask=None):
        """obs (one, or a batch of B, as the env gives them) -> (action, state).

        `state` is the recurrent state `predict` returned for these envs (None: start fresh; it
        is None for a policy without memory); `episode_start` `[B]` marks the envs whose obs
        begins a new episode (their state is zeroed first). A single obs gives a single action
        and a state with a batch of 1. A masked policy takes only the actions its mask allows:
        the mask in the observation, where the env puts it there, else `action_mask` (from the
        env's info or `action_masks()`, one or `[B, n]`), which also overrides the former."""
        leaves, single = self._leaves(self._with_mask(obs, action_mask))
        if self.obs_spec.mask_key is not None:
            sizes = mask_sizes(self.action_space)
            masks = leaves[self.obs_spec.mask_key].numpy()
            if (problem := no_legal_action(masks, sizes)) is not None:
                raise PredictError(f"predict: the action mask {problem}; give at least one legal action")
        batch = len(next(iter(leaves.values())))
        acting = Acting(self.network, self.action_space, batch)
        if state is not None and self.recurrent:
            acting.hidden = self._state(state, tuple(acting.hidden.shape))
        if episode_start is not None or state is not None:
            acting.ended(np.zeros(batch, bool) if episode_start is None else self._starts(episode_start, batch))
        action, _, _ = acting.act(leaves, deterministic=deterministic, generator=self.generator)
        env_action = acting.env_actions(action)
        next_state = acting.hidden.numpy().copy() if self.recurrent else None
        return (env_action[0] if single else env_action), next_state

    def _with_mask(self, obs, action_mask):
        """The observation with the mask where the policy reads it (see action_masks.py)."""
        key, source = self.obs_spec.mask_key, self.obs_spec.mask_source
        if action_mask is None:
            if source in ("info", "method"):
                raise PredictError(
                    f"predict: this policy takes only legal actions, and env {self.config.env.id!r} gives their mask "
                    f"in {describe_source(source, key)}: pass it, predict(obs, action_mask=...)"
                )
            return obs
        if key is None:
            raise PredictError("predict: action_mask given, but this policy was trained without action masks")
        return {**obs, key: action_mask} if isinstance(obs, dict) else {WRAPPED_KEY: obs, key: action_mask}

    def _leaves(self, obs) -> tuple[dict[str, torch.Tensor], bool]:
        """obs -> a tensor `[B, *shape]` per leaf, and whether it was one observation (as the
        first leaf's shape says); a part that does not fit is refused in one line."""
        first = self._value(obs, self.obs_spec.leaves[0])
        single = self._is_single(first, self.obs_spec.leaves[0])
        if not single and len(first) == 0:
            shape = self.obs_spec.leaves[0].shape
            raise PredictError(
                f"predict: an empty batch, shape {first.shape}; give one observation {shape} or a batch "
                f"(B, {', '.join(map(str, shape))}) with B >= 1"
            )
        key = self.obs_spec.leaves[0].key
        batch = f"one observation, as {key!r} is" if single else f"a batch of {len(first)}, as {key!r} is"
        leaves = {}
        for leaf in self.obs_spec.leaves:
            value = self._value(obs, leaf)
            self._check(value, leaf, leaf.shape if single else (len(first), *leaf.shape), batch)
            leaves[leaf.key] = torch.as_tensor(value[None] if single else value).to(leaf.dtype)
        return leaves, single

    def _value(self, obs, leaf: ObsLeaf) -> np.ndarray:
        try:
            return np.asarray(pick_leaf(obs, leaf.key))
        except (KeyError, IndexError, TypeError) as exc:
            raise PredictError(
                f"predict: the observation has no part {leaf.key!r} ({type(exc).__name__}: {exc}); "
                f"give observations as the env {self.config.env.id!r} gives them"
            ) from None
        except ValueError as exc:  # e.g. nested lists of different lengths
            detail = str(exc).split(". ")[0]
            raise PredictError(f"predict: observation {leaf.key!r} is not an array of one shape ({detail})") from None

    def _check(self, value: np.ndarray, leaf: ObsLeaf, shape: tuple[int, ...], batch: str) -> None:
        """One part of the observation must have its shape, hold numbers and, as floats, be finite."""
        if value.shape != shape:
            raise PredictError(
                f"predict: observation {leaf.key!r} has shape {value.shape}; expected {shape} ({batch}), "
                f"as the env {self.config.env.id!r} gives them"
            )
        if value.dtype.kind not in "biuf":
            raise PredictError(
                f"predict: observation {leaf.key!r} has dtype {value.dtype}; expected numbers "
                f"({str(leaf.dtype).removeprefix('torch.')}, as the env {self.config.env.id!r} gives them)"
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise PredictError(
                f"predict: observation {leaf.key!r} holds {value[index]} at index {index}; the policy cannot act "
                "on NaN or inf: pass finite observations"
            )

    def _is_single(self, value: np.ndarray, leaf: ObsLeaf) -> bool:
        """Whether a leaf's value is one observation (at the leaf's own shape) or a batch of them."""
        if value.shape == leaf.shape:
            return True
        if value.shape[1:] == leaf.shape:
            return False
        raise PredictError(
            f"predict: observation {leaf.key!r} has shape {value.shape}; expected {leaf.shape} (one) "
            f"or (B, {', '.join(map(str, leaf.shape))}) (a batch), as the env {self.config.env.id!r} gives it"
        )

    def _state(self, state, expected: tuple[int, ...]) -> torch.Tensor:
        """The caller's recurrent state, which must be the one predict returned for this batch."""
        hidden = np.asarray(state)
        if hidden.shape != expected or hidden.dtype.kind not in "biuf":
            raise PredictError(
                f"predict: state has shape {hidden.shape} ({hidden.dtype}); expected {expected} float32 for a batch of "
                f"{expected[self.network.state_dims.index(None)]}: pass back the state predict returned for these "
                "observations, or None to start them fresh"
            )
        return torch.as_tensor(hidden, dtype=torch.float32)

    @staticmethod
    def _starts(episode_start, batch: int) -> np.ndarray:
        starts = np.asarray(episode_start)
        if starts.size != batch or starts.dtype.kind not in "biu":
            raise PredictError(
                f"predict: episode_start has shape {starts.shape} ({starts.dtype}); expected ({batch},) bool, "
                "True for each observation that starts an episode"
            )
        return starts.reshape(batch).astype(bool)


def stored_format(path: Path) -> str | None:
    """What a file holds, by its content rather than its name: an exported program
    (torch.export's archive), a checkpoint (torch.save's archive), or None (neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(name.endswith("/archive_format") for name in names) or "serialized_exported_program.json" in names:
        return EXPORTED
    if any(name.endswith("/data.pkl") for name in names):
        return CHECKPOINT
    return None


def load_policy(target: str | Path, seed: int = 0, policy: str | None = None) -> Policy:
    """The policy of a run directory (its newest checkpoint), a checkpoint file or an exported
    `.pt2`. The env of its config is made once to learn the spaces (its package must be
    installed); `seed` seeds sampled actions (`deterministic=False`). A file is read as what it
    holds, whatever its name: a checkpoint renamed to `.pt2` is still a checkpoint. `policy`:
    which policy of a multi-agent run (may be left out where the run has one)."""
    found = stored_format(Path(target)) if Path(target).is_file() else CHECKPOINT
    if found is None and str(target).endswith(".pt2"):
        raise CheckpointError(
            f"{target} is neither an exported policy nor a checkpoint: no readable torch archive (another kind of "
            "file, or a truncated one); give a .pt2 written by python -m trainer export, a checkpoint or a run "
            "directory"
        )
    if found == EXPORTED:
        config, module, state_dims, name = load_exported(target)
        probe = probe_agents(config).groups[name].probe if name is not None else probe_env(config.env, config.policy)
        network = ExportedNetwork(module, state_dims, probe.obs_spec.is_single)
        return Policy(
            network, probe.obs_spec, probe.observation_space, probe.action_space, config, Path(target), None, seed, name
        )
    path, state = load_checkpoint(target)
    config = load_config(state["config"])
    policy_config = config
    if "policies" in state["runtime"]["learner"]:
        policy, group, weights = checkpoint_policy(state, config, path, policy)
        policy_config, probe = group.config, group.probe
    elif policy is not None:
        raise CheckpointError(f"{path} holds the one policy of a single-agent run; load it without policy={policy!r}")
    else:
        probe = probe_env(config.env, config.policy)
        check_spaces(state, probe, config.env.id, path)
        weights = state["runtime"]["learner"]["policy"]
    network = build_policy(probe.obs_spec, probe.action_space, policy_config)
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the policy of its config: {exc}") from None
    network.requires_grad_(False)
    return Policy(
        network.eval(),
        probe.obs_spec,
        probe.observation_space,
        probe.action_space,
        config,
        path,
        state["iteration"],
        seed,
        policy,
    )


def load_exported(path: str | Path) -> tuple[Config, nn.Module, tuple[int | None, ...], str | None]:
    """The config, the runnable module, the recurrent state's dims of an exported policy, and its
    name in its multi-agent run (None for a single-agent run's)."""
    extra = {CONFIG_FILE: "", META_FILE: ""}
    torch_log = logging.getLogger("torch.export")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # it logs a traceback for each format it tries before failing
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as exc:  # any failure to read means "not a usable artifact"
        raise CheckpointError(
            f"{path} is a damaged exported program (torch.export.load raised {type(exc).__name__}); export its "
            "checkpoint again: python -m trainer export CHECKPOINT OUT"
        ) from None
    finally:
        torch_log.setLevel(level)
    if not extra[CONFIG_FILE] or not extra[META_FILE]:
        raise CheckpointError(
            f"{path} is a torch.export program, but not a policy this trainer exported (it holds no {CONFIG_FILE} "
            "and meta.json); evaluate its checkpoint, or export that with: python -m trainer export CHECKPOINT OUT"
        )
    try:
        config = load_config(yaml.safe_load(extra[CONFIG_FILE]))
        meta = json.loads(extra[META_FILE])
        if "state_dims" in meta:
            dims = tuple(meta["state_dims"])
        else:  # exported by format-1 trainers: (L, H) of a [2, L, B, H] state
            layers, size = meta["state_shape"]
            dims = (2, layers, None, size)
    except (UserError, yaml.YAMLError, ValueError, TypeError, KeyError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} holds a config or meta.json this trainer cannot read ({detail})") from None
    return config, program.module(), dims, meta.get("policy")
