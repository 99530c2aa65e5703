"""Export a checkpoint as a self-contained inference program (torch.export, `.pt2`), written
atomically to an output path checked before any work (trainer/inference.py reads one back).

Why torch.export: the artifact is a graph plus weights that `torch.export.load` runs with no
Python class of ours and without unpickling code; TorchScript is in maintenance mode, and ONNX
would add onnx/onnxscript dependencies for the same single-step graph. The observation
preprocessing (normalizer, /255, one-hot) is part of the policy and so folded in; the resolved
config travels inside as an extra file.
"""

from __future__ import annotations

import io
import json
import stat
import tempfile
from pathlib import Path

import torch
from torch import nn

from trainer.core.config import dump_config
from trainer.core.errors import UserError
from trainer.core.policy import ActorCritic
from trainer.core.spec import ROOT, example_observation, state_shape
from trainer.inference import CONFIG_FILE, EXPORTED, META_FILE, load_policy, stored_format
from trainer.runtime.atomic import atomic_write
from trainer.runtime.checkpoint import CheckpointError


class ExportError(UserError):
    """An export that cannot be written where it was asked to go."""


class InferencePolicy(nn.Module):
    """Raw observation -> deterministic action, next recurrent state. One step, batch B: obs is
    the tensor `[B, *shape]` of a plain Box env, else a dict of leaf tensors (keys as in the
    checkpoint's observation description, dtypes as the env gives them; a masked policy's action
    mask is one of them, bool); hidden `[2, L, B, H]`; first `[B]` (True where an episode starts)."""

    def __init__(self, policy: ActorCritic) -> None:
        super().__init__()
        self.policy = policy
        self.single = policy.preprocess.spec.is_single

    def forward(self, obs, hidden: torch.Tensor, first: torch.Tensor):
        params, _, hidden = self.policy.step(obs, hidden, first)
        return self.policy.dist.mode(self.policy.masked(params, obs)), hidden


def export_checkpoint(checkpoint: str | Path, out: str | Path, policy: str | None = None) -> Path:
    """Write the checkpoint's (or run directory's newest) policy to `out`, atomically: a failed
    export leaves whatever was at `out` as it was. `out` is checked before anything is loaded.
    `policy`: which policy of a multi-agent run (see load_policy)."""
    out = Path(out)
    if (problem := unwritable(out.parent)) is not None:
        raise ExportError(f"export: cannot write {out}: {problem}; give a path in a directory you can write")
    if out.is_dir():
        raise ExportError(f"export: {out} is a directory; give the program's file path, e.g. {out / 'policy.pt2'}")
    if Path(checkpoint).is_file() and stored_format(Path(checkpoint)) == EXPORTED:
        raise CheckpointError(f"{checkpoint} is exported already; export takes a checkpoint or run directory")
    loaded = load_policy(checkpoint, policy=policy)
    policy = loaded.network
    module = InferencePolicy(policy).eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    leaves = {leaf.key: example_observation(leaf, (2,)) for leaf in loaded.obs_spec.leaves}
    obs, obs_dims = (leaves[ROOT], {0: batch}) if module.single else (leaves, {k: {0: batch} for k in leaves})
    dims = policy.state_dims
    hidden = torch.zeros(state_shape(dims, 2))
    with torch.no_grad():
        program = torch.export.export(
            module,
            (obs, hidden, torch.ones(2, dtype=torch.bool)),
            dynamic_shapes=(obs_dims, {dims.index(None): batch}, {0: batch}),
        )
    # The shared step also computes the value, which the program does not return: drop that work.
    program.graph_module.graph.eliminate_dead_code()
    program.graph_module.recompile()
    meta = {
        "checkpoint": str(loaded.path),
        "iteration": loaded.iteration,
        "state_dims": list(dims),
        "observation": loaded.obs_spec.describe(),
    } | ({"policy": loaded.name} if loaded.name is not None else {})
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
