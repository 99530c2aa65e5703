"""Continuing a run: which config and checkpoint a start trains from (`--resume`, `--resume
auto`, a hand-edited config.yaml), what the resumed config changes, and whether the checkpoint's
network still fits it. Workers, envs per worker and rollout length may change (an elastic resume
onto another cluster); the network may not."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.core.config import Config, is_opaque, load_config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.policy import build_policy
from trainer.runtime.checkpoint import CHECKPOINT_DIR, CheckpointError, load_checkpoint, periodic_checkpoints

AUTO = "auto"


def resolve_resume(resume: str | Path | None, run_dir: str | Path | None) -> str | Path | None:
    """`auto`: continue RUN_DIR when it has a checkpoint, else start it. One idempotent command,
    so a resubmitted job (a `ray job submit` retry, a restarted pod) picks up where it stopped."""
    if str(resume) != AUTO:
        return resume
    if run_dir is None:
        raise UserError("--resume auto needs --run-dir DIR: the directory to continue, or to start the run in")
    return run_dir if periodic_checkpoints(Path(run_dir) / CHECKPOINT_DIR) else None


def config_changes(saved: dict, config: Config) -> list[str]:
    """`key: old -> new` for every setting the resumed run changes (an opaque mapping as one)."""
    changes: list[str] = []

    def walk(prefix: str, old: dict, new: dict) -> None:
        for key in sorted(set(old) | set(new)):
            name, before, after = f"{prefix}{key}", old.get(key), new.get(key)
            if isinstance(before, dict) and isinstance(after, dict) and not is_opaque(name):
                walk(f"{name}.", before, after)
            elif before != after and name != "name":
                changes.append(f"{name} {before!r} -> {after!r}")

    walk("", saved, config.model_dump())
    return changes


def check_policy_fits(checkpoint: dict, config: Config, probe: Probe, path: Path) -> None:
    """Refuse, in one line, a config whose network differs from the checkpoint's."""
    saved = checkpoint["runtime"]["learner"]["policy"]
    with torch.device("meta"):  # shapes only
        current = build_policy(probe.obs_spec, probe.action_space, config).state_dict()
    differing = sorted(k for k in set(saved) | set(current)
                       if k not in saved or k not in current or saved[k].shape != current[k].shape)  # fmt: skip
    if not differing:
        return
    keys = [c for c in config_changes(checkpoint["config"], config) if c.startswith(("policy.", "ppo.normalize_obs"))]
    what = "; ".join(keys) if keys else f"parameters {', '.join(differing[:3])} differ"
    raise CheckpointError(
        f"checkpoint {path} holds a different network than this config asks ({what}); resume without "
        "changing the network, or start a new run"
    )


def resolve_run(config, overrides, resume, run_dir) -> tuple[Config, dict | None, str | Path | None]:
    """The config to train with and, when resuming, the checkpoint to start from (its run
    directory becomes the run's)."""
    resume = resolve_resume(resume, run_dir)
    if resume is not None:
        checkpoint_path, checkpoint = load_checkpoint(resume)
        run_dir = checkpoint_path.parent.parent
        edited = edited_config(run_dir, checkpoint) if config is None else None
        if config is None:
            config = edited or checkpoint["config"]
        config = load_config(config, overrides)
        return config, {**checkpoint, "path": checkpoint_path, "edited_config": edited}, run_dir
    if config is None:
        raise UserError("train needs a config file, or --resume RUN_DIR to continue a run")
    return load_config(config, overrides), None, run_dir


def edited_config(run_dir: Path, checkpoint: dict) -> Path | None:
    """RUN/config.yaml when it says something else than the checkpoint's config (a hand edit, or
    a later start that stopped before its first checkpoint): a resume then trains with it."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    edited = load_config(path).model_dump()
    return path if edited != load_config(checkpoint["config"]).model_dump() else None
