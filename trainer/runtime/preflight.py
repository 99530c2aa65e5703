"""Every check a run makes before it writes anything or starts Ray: the cluster's address, the
env and its spaces against a checkpoint's, the eval env, video, a custom network's interface, and
memory. A bad input then fails in seconds, in one line, and leaves nothing behind."""

from __future__ import annotations

import os

from trainer.core.agent_envs import made_agent_env
from trainer.core.agents import AgentsProbe, probe_agents
from trainer.core.config import Config
from trainer.core.envs import Probe, probe_env, probe_run
from trainer.core.errors import UserError
from trainer.core.policy import build_policy
from trainer.runtime.agent_checkpoints import with_eval_opponent
from trainer.runtime.checkpoint import check_spaces, describe_spaces
from trainer.runtime.evaluation import check_video
from trainer.runtime.memory_fit import ensure_memory_fits
from trainer.runtime.ray_connect import check_cluster
from trainer.runtime.resume import check_policy_fits


def preflight(config: Config, checkpoint: dict | None, address: str | None = None) -> Probe | AgentsProbe:
    """Check the run and return the env's probe (its spaces and ObsSpec; a PettingZoo env's
    agents and policies)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if config.execution == "ray" and address:
        check_cluster(address)
    if (made := made_agent_env(config.env)) is not None:
        probe = probe_agents(config, made)
        if checkpoint is not None:
            check_spaces(checkpoint, probe, config.env.id, checkpoint["path"])
        check_video(config, agents=True)
        return with_eval_opponent(config, probe)
    if config.policies or config.policy_mapping or config.self_play or config.eval.opponent:
        raise UserError(
            "policies, policy_mapping, self_play and eval.opponent are for PettingZoo (multi-agent) envs, and env "
            f"{config.env.id!r} is a gymnasium env; remove them (the `policy` section configures its one policy)"
        )
    probe = probe_run(config)
    if checkpoint is not None:
        check_spaces(checkpoint, probe, config.env.id, checkpoint["path"])
        check_policy_fits(checkpoint, config, probe, checkpoint["path"])
    if config.eval.every and config.eval.env:
        check_eval_env(config, probe)
    check_video(config)
    if config.policy.kind not in ("mlp", "lstm") or config.policy.encoder != "auto":
        build_policy(probe.obs_spec, probe.action_space, config)  # a custom network's interface, checked here
    ensure_memory_fits(config, probe)
    return probe


def check_eval_env(config: Config, probe: Probe) -> None:
    """The eval env (env with eval.env's keys) must give the observations and actions the policy has."""
    eval_probe = probe_env(config.eval_env, config.policy)
    trained, evaluated = describe_spaces(probe), describe_spaces(eval_probe)
    if trained != evaluated:
        raise UserError(
            f"eval.env changes what the policy sees or does: training env {trained}, eval env {evaluated}; "
            "eval.env may change only what keeps observations and actions as they are (e.g. reward or life wrappers)"
        )
