"""The run directory: where a run's config, summary, events and checkpoints go, written atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

from trainer.core.config import Config, dump_config
from trainer.core.errors import UserError
from trainer.runtime.checkpoint import CHECKPOINT_DIR, periodic_checkpoints


def default_run_name(config: Config) -> str:
    env = config.env.id.replace("/", "-").replace(":", "-")
    return f"{env}__{config.name}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(
    config: Config, run_dir: str | Path | None = None, run_name: str | None = None, resuming: bool = False
) -> Path:
    """Make the run directory and save the resolved config in it. A directory that holds a run
    with checkpoints is only reused to resume it, never overwritten by a new run; one whose
    earlier start stopped before its first checkpoint is started again."""
    path = Path(run_dir) if run_dir is not None else Path(config.logging.dir) / (run_name or default_run_name(config))
    if not resuming and periodic_checkpoints(path / CHECKPOINT_DIR):
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} or pick another")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise UserError(f"cannot write to run directory {path}: {exc.strerror}") from None
    atomic_write_text(path / "config.yaml", dump_config(config))
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see the old
    file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    """Strict JSON: a NaN or infinity (no episode finished yet) is written as null."""
    atomic_write_text(path, json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
