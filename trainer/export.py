"""Export a checkpoint as a self-contained inference program (torch.export, `.pt2`), written
atomically to an output path checked before any work; and read one back.

Why torch.export: the artifact is a graph plus weights that `torch.export.load` runs with no
Python class of ours and without unpickling code; TorchScript is in maintenance mode, and ONNX
would add onnx/onnxscript dependencies for the same single-step graph. The observation
preprocessing (normalizer, /255, one-hot) is part of the policy and so folded in; the resolved
config travels inside as an extra file.
"""

from __future__ import annotations

import io
import json
import logging
import stat
import tempfile
from pathlib import Path

import torch
import yaml
from torch import nn

from trainer.core.config import Config, dump_config, load_config
from trainer.core.errors import UserError
from trainer.core.policy import ActorCritic
from trainer.core.spec import ROOT, example_observation
from trainer.inference import EXPORTED, load_policy, stored_format
from trainer.runtime.atomic import atomic_write
from trainer.runtime.checkpoint import CheckpointError

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"


class ExportError(UserError):
    """An export that cannot be written where it was asked to go."""


class InferencePolicy(nn.Module):
    """Raw observation -> deterministic action, next recurrent state. One step, batch B: obs is
    the tensor `[B, *shape]` of a plain Box env, else a dict of leaf tensors (keys as in the
    checkpoint's observation description, dtypes as the env gives them); hidden `[2, L, B, H]`;
    first `[B]` (True where an episode starts)."""

    def __init__(self, policy: ActorCritic) -> None:
        super().__init__()
        self.policy = policy
        self.single = policy.preprocess.spec.is_single

    def forward(self, obs, hidden: torch.Tensor, first: torch.Tensor):
        leaves = {ROOT: obs} if self.single else obs
        (actor_x, _), hidden = self.policy.features(
            {k: x.unsqueeze(0) for k, x in leaves.items()}, hidden, first.unsqueeze(0)
        )
        return self.policy.dist.mode(self.policy.actor_head(actor_x[0])), hidden


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the checkpoint's (or run directory's newest) policy to `out`, atomically: a failed
    export leaves whatever was at `out` as it was. `out` is checked before anything is loaded."""
    out = Path(out)
    if (problem := unwritable(out.parent)) is not None:
        raise ExportError(f"export: cannot write {out}: {problem}; give a path in a directory you can write")
    if out.is_dir():
        raise ExportError(f"export: {out} is a directory; give the program's file path, e.g. {out / 'policy.pt2'}")
    if Path(checkpoint).is_file() and stored_format(Path(checkpoint)) == EXPORTED:
        raise CheckpointError(f"{checkpoint} is exported already; export takes a checkpoint or run directory")
    loaded = load_policy(checkpoint)
    policy = loaded.network
    module = InferencePolicy(policy).eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    leaves = {leaf.key: example_observation(leaf, (2,)) for leaf in loaded.obs_spec.leaves}
    obs, obs_dims = (leaves[ROOT], {0: batch}) if module.single else (leaves, {k: {0: batch} for k in leaves})
    dims = policy.state_dims
    hidden = torch.zeros([2 if d is None else d for d in dims])
    with torch.no_grad():
        program = torch.export.export(
            module,
            (obs, hidden, torch.ones(2, dtype=torch.bool)),
            dynamic_shapes=(obs_dims, {dims.index(None): batch}, {0: batch}),
        )
    meta = {
        "checkpoint": str(loaded.path),
        "iteration": loaded.iteration,
        "state_dims": list(dims),
        "observation": loaded.obs_spec.describe(),
    }
    extra_files = {CONFIG_FILE: dump_config(loaded.config), META_FILE: json.dumps(meta)}
    data = io.BytesIO()
    torch.export.save(program, data, extra_files=extra_files)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, data.getbuffer())
    except OSError as exc:
        raise ExportError(f"export: could not write {out}: {exc.strerror or exc}") from None
    return out


def unwritable(directory: Path) -> str | None:
    """Why files cannot be written in `directory`, made if missing (None: they can): the nearest
    existing path on the way is a file, or a directory that refuses a new file."""
    for existing in (directory, *directory.parents):
        try:
            is_dir = stat.S_ISDIR(existing.stat().st_mode)
        except (FileNotFoundError, NotADirectoryError):
            continue  # made on the way (or a file further up says why not)
        except OSError as exc:
            return f"cannot reach {existing} ({exc.strerror or exc})"
        if not is_dir:
            return f"{existing} is a file, not a directory"
        try:  # a real write says more than os.access, which a root user or a read-only mount fools
            tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-").close()
        except OSError as exc:
            return f"cannot write in {existing} ({exc.strerror or exc})"
        return None
    return None


def load_exported(path: str | Path) -> tuple[Config, nn.Module, tuple[int | None, ...]]:
    """The config, the runnable module and the recurrent state's dims of an exported policy."""
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
    return config, program.module(), dims
