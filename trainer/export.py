"""Export a checkpoint as a self-contained inference program (torch.export, `.pt2`).

Why torch.export: the artifact is a graph plus weights that `torch.export.load` runs with no
Python class of ours and without unpickling code; TorchScript is in maintenance mode, and ONNX
would add onnx/onnxscript dependencies for the same single-step graph. The observation
normalizer is folded in, and the resolved config travels inside as an extra file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch import nn

from trainer.core.config import Config, dump_config, load_config
from trainer.core.distributions import distribution_for
from trainer.core.envs import probe_env
from trainer.core.normalization import RunningMeanStd
from trainer.core.policy import ActorCritic, build_policy, observation_dim
from trainer.runtime.checkpoint import CheckpointError, load_checkpoint

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"


class InferencePolicy(nn.Module):
    """normalized obs -> deterministic action, next recurrent state. One step, batch B:
    obs `[B, D]`, hidden `[2, L, B, H]`, first `[B]` (True where an episode starts)."""

    def __init__(self, policy: ActorCritic, obs_rms: RunningMeanStd | None, clip: float) -> None:
        super().__init__()
        self.policy = policy
        mean = obs_rms.mean.float() if obs_rms else torch.zeros(0)
        std = torch.sqrt(obs_rms.var.float() + obs_rms.eps) if obs_rms else torch.ones(0)
        self.normalize = obs_rms is not None
        self.register_buffer("obs_mean", mean)
        self.register_buffer("obs_std", std)
        self.clip = clip

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.normalize:
            return obs
        return ((obs - self.obs_mean) / self.obs_std).clamp(-self.clip, self.clip)

    def forward(self, obs: torch.Tensor, hidden: torch.Tensor, first: torch.Tensor):
        obs = self.normalize_obs(obs)
        (actor_x, _), hidden = self.policy.features(obs.unsqueeze(0), hidden, first.unsqueeze(0))
        return self.policy.dist.mode(self.policy.actor_head(actor_x[0])), hidden


def policy_from_checkpoint(state: dict, observation_space, action_space) -> tuple[Config, ActorCritic, RunningMeanStd]:
    config = load_config(state["config"])
    policy = build_policy(observation_dim(observation_space), distribution_for(action_space), config.policy)
    learner = state["runtime"]["learner"]
    try:
        policy.load_state_dict(learner["policy"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the policy of its config: {exc}") from None
    obs_rms = RunningMeanStd((observation_dim(observation_space),))
    obs_rms.load_state_dict(learner["obs_rms"])
    return config, policy.eval(), obs_rms


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    path, state = load_checkpoint(checkpoint)
    config = load_config(state["config"])
    observation_space, action_space, _ = probe_env(config.env)
    config, policy, obs_rms = policy_from_checkpoint(state, observation_space, action_space)
    module = InferencePolicy(policy, obs_rms if config.ppo.normalize_obs else None, config.ppo.obs_clip).eval()
    layers, size = policy.state_shape
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = (
        torch.zeros(2, observation_dim(observation_space)),
        torch.zeros(2, layers, 2, size),
        torch.ones(2, dtype=torch.bool),
    )
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=({0: batch}, {2: batch}, {0: batch}))
    meta = {"checkpoint": str(path), "iteration": state["iteration"], "state_shape": [layers, size]}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out, extra_files={CONFIG_FILE: dump_config(config), META_FILE: json.dumps(meta)})
    return out


def load_exported(path: str | Path) -> tuple[Config, nn.Module, tuple[int, int]]:
    extra = {CONFIG_FILE: "", META_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as exc:  # any failure to read means "not a usable artifact"
        raise CheckpointError(f"{path} is not an exported policy ({type(exc).__name__})") from None
    config = load_config(yaml.safe_load(extra[CONFIG_FILE]))
    layers, size = json.loads(extra[META_FILE])["state_shape"]
    return config, program.module(), (layers, size)
