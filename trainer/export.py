"""Export a checkpoint as a self-contained inference program (torch.export, `.pt2`).

Why torch.export: the artifact is a graph plus weights that `torch.export.load` runs with no
Python class of ours and without unpickling code; TorchScript is in maintenance mode, and ONNX
would add onnx/onnxscript dependencies for the same single-step graph. The observation
preprocessing (normalizer, /255, one-hot) is part of the policy and so folded in; the resolved
config travels inside as an extra file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch import nn

from trainer.core.config import Config, dump_config, load_config
from trainer.core.policy import ActorCritic
from trainer.core.spec import ROOT, example_observation
from trainer.inference import load_policy
from trainer.runtime.checkpoint import CheckpointError

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"


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
    if str(checkpoint).endswith(".pt2"):
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out, extra_files={CONFIG_FILE: dump_config(loaded.config), META_FILE: json.dumps(meta)})
    return out


def load_exported(path: str | Path) -> tuple[Config, nn.Module, tuple[int | None, ...]]:
    """The config, the runnable module and the recurrent state's dims of an exported policy."""
    extra = {CONFIG_FILE: "", META_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as exc:  # any failure to read means "not a usable artifact"
        raise CheckpointError(f"{path} is not an exported policy ({type(exc).__name__})") from None
    config = load_config(yaml.safe_load(extra[CONFIG_FILE]))
    meta = json.loads(extra[META_FILE])
    if "state_dims" in meta:
        dims = tuple(meta["state_dims"])
    else:  # exported by format-1 trainers: (L, H) of a [2, L, B, H] state
        layers, size = meta["state_shape"]
        dims = (2, layers, None, size)
    return config, program.module(), dims
