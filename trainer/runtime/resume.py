"""Continuing a run: `--resume auto`, what the resumed config changes, and whether the checkpoint's
network still fits it. Workers, envs per worker and rollout length may change (an elastic resume
onto another cluster); the network may not."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.policy import build_policy
from trainer.runtime.checkpoint import CHECKPOINT_DIR, CheckpointError, periodic_checkpoints

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
    """`key: old -> new` for every setting the resumed run changes."""
    changes: list[str] = []

    def walk(prefix: str, old: dict, new: dict) -> None:
        for key in sorted(set(old) | set(new)):
            before, after = old.get(key), new.get(key)
            if isinstance(before, dict) and isinstance(after, dict) and key not in ("kwargs", "resources"):
                walk(f"{prefix}{key}.", before, after)
            elif before != after and f"{prefix}{key}" != "name":
                changes.append(f"{prefix}{key} {before!r} -> {after!r}")

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
