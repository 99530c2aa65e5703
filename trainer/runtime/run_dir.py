"""The run directory: where a run's config, summary, events and checkpoints go, written atomically."""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import yaml

from trainer.core.config import Config, dump_config
from trainer.core.errors import UserError
from trainer.runtime.atomic import atomic_write
from trainer.runtime.checkpoint import CHECKPOINT_DIR, periodic_checkpoints

LOCK = ".lock"


RUN_FILES = ("config.yaml", "summary.json", "train.log", CHECKPOINT_DIR, "videos", LOCK)
"""What a run directory holds (besides TensorBoard's event files and hidden temporary files)."""


def default_run_name(config: Config) -> str:
    env = config.env.id.replace("/", "-").replace(":", "-")
    return f"{env}__{config.name}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def run_path(config: Config, run_dir: str | Path | None, run_name: str | None) -> Path:
    """Where the run goes: --run-dir as given, else logging.dir/NAME; a name is one folder name."""
    if run_dir is not None:
        return Path(run_dir)
    if run_name is not None and (run_name in ("", ".", "..") or "/" in run_name or os.sep in run_name):
        raise UserError(
            f"--run-name {run_name!r} must be one folder name inside logging.dir ({config.logging.dir}); "
            "use --run-dir PATH to put a run anywhere else"
        )
    return Path(config.logging.dir) / (run_name or default_run_name(config))


def create_run_dir(config: Config, path: Path, resuming: bool = False, wait_for_lock_s: float = 0.0) -> Path:
    """Make the run directory, take its lock (held until `release_run_dir`) and save the resolved
    config in it. A directory that holds a run with checkpoints is only reused to resume it, never
    overwritten by a new run; one whose earlier start stopped before its first checkpoint is
    started again; one that holds anything else is refused (it is not ours to write into)."""
    if not resuming and periodic_checkpoints(path / CHECKPOINT_DIR):
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} or pick another")
    if path.exists() and not path.is_dir():
        raise UserError(f"run directory {path} is a file; give a directory (new or empty) as --run-dir")
    if foreign := foreign_entries(path):
        raise UserError(
            f"run directory {path} holds files that are not a run of this trainer ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); give a new or empty directory as --run-dir"
        )
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise UserError(f"cannot write to run directory {path}: {exc.strerror}") from None
    lock = RunLock(path, wait_s=wait_for_lock_s)
    _held[path.resolve()] = (lock, created)
    try:
        atomic_write_text(path / "config.yaml", dump_config(config))
    except OSError as exc:
        release_run_dir(path, discard=True)
        raise UserError(f"could not write {path / 'config.yaml'}: {exc.strerror or exc}; nothing was trained") from None
    return path


def foreign_entries(path: Path) -> list[str]:
    """Names in `path` that no run of this trainer writes (a run's own files and folders, event
    files and hidden temporary files are ours)."""
    if not path.is_dir():
        return []
    return sorted(
        entry.name
        for entry in path.iterdir()
        if (entry.name not in RUN_FILES and not entry.name.startswith((".", "events.out.tfevents.")))
        or (entry.name == "config.yaml" and not _is_resolved_config(entry))
    )


def _is_resolved_config(path: Path) -> bool:
    """Whether a config.yaml is one a run wrote: every section of the config, defaults included
    (a user's own config holds only what differs; an older trainer's lacks the NEWER_KEYS)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    fields = set(Config.model_fields)
    return isinstance(raw, dict) and fields - NEWER_KEYS <= set(raw) <= fields


NEWER_KEYS = {"policies", "policy_mapping", "self_play"}
"""Config keys newer than some run directories: a config.yaml written before them is still a run's."""


_held: dict[Path, tuple[RunLock, bool]] = {}  # the run directories this process holds: lock, made here


def release_run_dir(path: Path, discard: bool = False) -> None:
    """Let go of a run directory's lock. `discard`: the run trained nothing (it failed to start),
    so a directory it made is removed again, and it leaves no folder holding only a config."""
    lock, created = _held.pop(path.resolve(), (None, False))
    if lock is None:
        return
    if discard and created and not periodic_checkpoints(path / CHECKPOINT_DIR):
        shutil.rmtree(path, ignore_errors=True)
    lock.release()


class RunLock:
    """One live run per directory: an exclusive `flock` on RUN/.lock, which names its holder. The
    kernel drops the lock when the holding process dies, so a killed run never blocks the next
    one; a second run (a retried job, a second pod resuming the same directory) is refused while
    the first lives. On NFS, flock is a POSIX lock the server keeps (NFSv4)."""

    def __init__(self, directory: Path, wait_s: float = 0.0) -> None:
        self.path = directory / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                holder = os.pread(self.fd, 1000, 0).decode(errors="replace").strip() or "another process"
                os.close(self.fd)
                raise RunDirInUse(
                    f"run directory {directory} is in use by a live run ({holder}); wait for it to end or stop it, "
                    "or give another --run-dir"
                ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, holder_text().encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


class RunDirInUse(UserError):
    """Another live process is training in this run directory."""


def holder_text() -> str:
    """Who holds a run directory: pid, host, start time and, under `ray job submit`, the job."""
    text = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("metadata", {}).get("job_submission_id")
    return f"{text}, Ray job {job}" if job else text


def atomic_write_text(path: Path, text: str) -> None:
    """`text` as UTF-8, written atomically (see `atomic_write`)."""
    atomic_write(path, text.encode())


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
