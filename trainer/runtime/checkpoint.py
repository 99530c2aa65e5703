"""Checkpoints: written atomically (temporary file, fsync, rename) into RUN_DIR/checkpoints/,
keeping the last K plus the best; read back with `weights_only=True`, so loading a file never
runs code from it. A checkpoint holds only tensors and plain Python values.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from trainer.core.errors import UserError

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
BEST = "best.pt"
PERIODIC = re.compile(r"^iter_(\d{7})\.pt$")


class CheckpointError(UserError):
    """A checkpoint that cannot be written, found, read or used."""


def save_checkpoint(run_dir: Path, state: dict, keep_last: int, is_best: bool) -> Path:
    """Write `iter_<iteration>.pt` (and point best.pt at it), then drop all but the last K."""
    directory = run_dir / CHECKPOINT_DIR
    path = directory / f"iter_{state['iteration']:07d}.pt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_save({"format_version": FORMAT_VERSION, **state}, path)
        if is_best:
            link = directory / f".{BEST}.{os.getpid()}.tmp"
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, directory / BEST)
        _fsync_dir(directory)
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; earlier checkpoints are intact"
        ) from None
    for old in periodic_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def _atomic_save(obj: dict, path: Path) -> None:
    # Serialize in memory first: a full disk then fails as a plain OSError on write().
    data = io.BytesIO()
    torch.save(obj, data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def periodic_checkpoints(directory: Path) -> list[Path]:
    """iter_*.pt files, oldest first (temporary files of interrupted writes are not among them)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if PERIODIC.match(p.name))


def find_checkpoint(target: str | Path) -> Path:
    """A checkpoint file as given, or the newest one of a run directory."""
    path = Path(target)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"checkpoint or run directory not found: {path}")
    found = periodic_checkpoints(path / CHECKPOINT_DIR)
    if not found:
        raise CheckpointError(f"{path} is not a run directory with checkpoints (no {CHECKPOINT_DIR}/iter_*.pt)")
    return found[-1]


def load_checkpoint(target: str | Path) -> tuple[Path, dict]:
    """Read a checkpoint onto the CPU (wherever it was written), refusing anything but plain data."""
    path = find_checkpoint(target)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "not an allowed global" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors and plain data; refusing to load it "
                "(loading it could run code from the file)"
            ) from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted (it does not unpickle)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({_first_line(exc)})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this trainer")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['format_version']}; "
            f"this trainer reads version {FORMAT_VERSION}"
        )
    return path, state


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's can run to a paragraph)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line.split(". ")[0].removesuffix(".")[:160]


def capture_rng() -> dict:
    """Process-wide RNG states (python, numpy, torch CPU and CUDA) as plain data."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
