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
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.normalization import RunningMeanStd
from trainer.runtime.atomic import atomic_write, fsync_dir

FORMAT_VERSION = 2  # 2: observations as a tree of leaves; format 1 (one flat vector) is upgraded on load
CHECKPOINT_DIR = "checkpoints"
BEST = "best.pt"
PERIODIC = re.compile(r"^iter_(\d{7})\.pt$")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


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
        fsync_dir(directory)
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
    atomic_write(path, data.getbuffer())


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
    """Read a checkpoint onto the CPU (wherever it was written), refusing anything but plain data
    and any file whose bytes fail their checksums."""
    path = find_checkpoint(target)
    check_intact(path)
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
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted ({_first_line(exc)}){_instead(path)}"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this trainer")
    if state["format_version"] == 1:
        state = _upgrade_from_format_1(state)
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['format_version']}; "
            f"this trainer reads versions 1 and {FORMAT_VERSION}"
        )
    state["runtime"]["learner"].setdefault("env_steps", state["env_steps"])  # not kept before elastic resume
    state.setdefault("learner_restarts", 0)
    # Before callbacks kept state of their own, evaluation's was kept as "eval".
    state.setdefault("callbacks", {"evaluation": state.pop("eval")} if "eval" in state else {})
    return path, state


def check_intact(path: Path) -> None:
    """Refuse a file that is not a checkpoint, or whose stored CRC-32s do not match its bytes
    (torch.load does not check them: flipped bits in a tensor would load as other weights)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head.startswith(ZIP_MAGIC):
        if _is_text(head):
            raise CheckpointError(
                f"{path} is a text file, not a checkpoint; give a run directory or one of its checkpoints/*.pt files"
            )
        raise CheckpointError(
            f"{path} is corrupted or not a checkpoint (it does not start like a torch.save archive){_instead(path)}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({exc}){_instead(path)}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupted: its entry {bad} fails the CRC-32 check{_instead(path)}")


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


def _instead(path: Path) -> str:
    """The newest intact checkpoint beside a damaged one, as advice to use it."""
    candidates = [*reversed(periodic_checkpoints(path.parent)), path.parent / BEST]
    for other in candidates:
        if other.resolve() == path.resolve() or not other.is_file():
            continue
        try:
            check_intact(other)
        except CheckpointError:
            continue
        return f"; the newest intact checkpoint is {other} (give it instead)"
    return "; no intact checkpoint is left beside it"


def set_aside_later_checkpoints(directory: Path, iteration: int) -> tuple[list[Path], Path | None]:
    """Resuming from a checkpoint that is not the newest starts a new timeline: the old one's
    later checkpoints (and a best.pt among them) move into checkpoints/superseded-TIME/, where
    pruning never reaches and no newer name hides this run's own checkpoints."""
    later = [p for p in periodic_checkpoints(directory) if int(PERIODIC.match(p.name).group(1)) > iteration]
    best = directory / BEST
    if best.is_file() and _iteration_of(best) > iteration:
        later.append(best)
    if not later:
        return [], None
    target = directory / f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
    target.mkdir(exist_ok=True)
    for path in later:
        os.replace(path, target / path.name)
    fsync_dir(directory)
    return later, target


def _iteration_of(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["iteration"])
    except (RuntimeError, OSError, KeyError, ValueError, pickle.UnpicklingError):
        return -1  # unreadable: not this timeline's concern


def _upgrade_from_format_1(state: dict) -> dict:
    """Format 1 had one flat observation vector: its normalizer becomes the stats of leaf 'obs'
    (also as the preprocessor's frozen buffers), and the LSTM's MLP, then named `encoder`, is
    now the `torso` behind the observation encoder."""
    learner = state["runtime"]["learner"]
    rms = RunningMeanStd(tuple(learner["obs_rms"]["mean"].shape))
    rms.load_state_dict(learner["obs_rms"])
    learner["obs_rms"] = {"obs": learner["obs_rms"]}
    prefix = "torso." if state["config"].get("policy", {}).get("kind") == "lstm" else None
    policy = {(prefix + k[len("encoder.") :] if prefix and k.startswith("encoder.") else k): v
              for k, v in learner["policy"].items()}  # fmt: skip
    if state["config"].get("ppo", {}).get("normalize_obs", True):
        mean, std = rms.moments()
        policy["preprocess.standardize.obs.mean"], policy["preprocess.standardize.obs.std"] = mean, std
    learner["policy"] = policy
    return {**state, "format_version": 2}


def describe_spaces(probe) -> dict:
    """What a checkpoint records of its env: the observation leaves and the action space (of
    each policy, with its agents, for a PettingZoo env: an AgentsProbe)."""
    if not isinstance(probe, Probe):
        return {"policies": probe.describe()}
    return {"observation": probe.obs_spec.describe(), "action": str(probe.action_space)}


def check_spaces(state: dict, probe: Probe, env_id: str, path: Path) -> None:
    """Refuse, in one line, an env whose observations or actions differ from the checkpoint's."""
    recorded = state["spaces"]
    current = describe_spaces(probe)
    if "policies" in recorded or "policies" in current:
        if recorded != current:
            raise CheckpointError(
                f"checkpoint {path} was written for agents and policies {recorded.get('policies', 'none')}, but env "
                f"{env_id!r} with this config has {current.get('policies', 'none')}; use the env and policies it was "
                "trained with"
            )
        return
    if isinstance(recorded["observation"], str):  # format 1 recorded the space as text
        current["observation"] = str(probe.observation_space)
    if recorded != current:
        raise CheckpointError(
            f"checkpoint {path} was written for observations {_leaves_text(recorded['observation'])} and actions "
            f"{recorded['action']}, but env {env_id!r} has {_leaves_text(current['observation'])} and "
            f"{current['action']}; use the env (and env.wrappers) it was trained on"
        )


def _leaves_text(observation: list[dict] | str) -> str:
    if isinstance(observation, str):
        return observation
    return "{" + ", ".join(f"{d['key']}: {d['kind']} {d['dtype'].removeprefix('torch.')} {tuple(d['shape'])}"
                           + (f" from {d['source']}" if "source" in d else "") for d in observation) + "}"  # fmt: skip


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's can run to a paragraph)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line.split(". ")[0].removesuffix(".")[:160]


def worker_rng_states(state: dict, num_workers: int) -> list:
    """The saved sampling RNG of each of `num_workers` workers; None for a worker the checkpointed
    run did not have (an elastic resume onto more workers)."""
    saved = list(state["worker_rng"])[:num_workers]
    return saved + [None] * (num_workers - len(saved))


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


def save_best_checkpoint(run_dir: Path, state: dict) -> Path:
    """Write best.pt on its own (evaluation picks weights that are not a periodic checkpoint)."""
    directory = run_dir / CHECKPOINT_DIR
    path = directory / BEST
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_save({"format_version": FORMAT_VERSION, **state}, path)
        fsync_dir(directory)
    except OSError as exc:
        raise CheckpointError(
            f"could not write {path}: {exc.strerror or exc}; earlier checkpoints are intact"
        ) from None
    return path
