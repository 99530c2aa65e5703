"""Reading one policy out of a multi-agent checkpoint: for `load_policy(run, policy=NAME)` and
for `eval.opponent: CHECKPOINT[:policy]`, which preflight loads into the probe once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from trainer.core.agents import AgentsProbe, PolicyGroup, probe_agents
from trainer.core.config import Config, load_config
from trainer.core.errors import UserError
from trainer.runtime.checkpoint import CheckpointError, check_spaces, load_checkpoint

RANDOM = "random"


def checkpoint_policy(state: dict, config: Config, path: Path, name: str | None) -> tuple[str, PolicyGroup, dict]:
    """Policy `name` of a multi-agent checkpoint (may be left out where it has one): its name,
    its group (config and probe) and its weights."""
    saved = state["runtime"]["learner"]["policies"]
    if name is None and len(saved) == 1:
        name = next(iter(saved))
    if name not in saved:
        which = "name one" if name is None else f"it has no policy {name!r}"
        first = next(iter(saved))
        raise CheckpointError(
            f"{path} holds the policies {', '.join(saved)} of a multi-agent run; {which}: "
            f"load_policy(path, policy={first!r}) (--policy {first})"
        )
    probe = probe_agents(config)
    check_spaces(state, probe, config.env.id, path)
    return name, probe.groups[name], saved[name]["policy"]


def with_eval_opponent(config: Config, probe: AgentsProbe) -> AgentsProbe:
    """The probe with `eval.opponent`'s policy (a checkpoint's) loaded into it, checked to see and
    act as the self-play policy does; eval.opponent needs self-play (which seats it takes)."""
    value = config.eval.opponent
    if value is None:
        return probe
    if probe.self_play is None:
        raise UserError(
            "eval.opponent plays the seats of self_play.opponents, and this config has no self_play; add it, "
            "or leave eval.opponent out to evaluate every agent with its own policy"
        )
    if value == RANDOM:
        return probe
    target, _, name = value.rpartition(":") if ":" in value and not Path(value).exists() else (value, "", "")
    path, state = load_checkpoint(target)
    if "policies" not in state["runtime"]["learner"]:
        raise UserError(f"eval.opponent {value!r} is a single-agent run's checkpoint; give a multi-agent run's")
    _, group, weights = checkpoint_policy(state, load_config(state["config"]), path, name or None)
    mine = probe.groups[probe.self_play.policy].probe
    if group.probe.obs_spec.describe() != mine.obs_spec.describe() or group.probe.action_space != mine.action_space:
        raise UserError(
            f"eval.opponent {value!r} sees or acts otherwise than policy {probe.self_play.policy!r} "
            f"({group.probe.action_space} against {mine.action_space}); give a policy trained on this env's seats"
        )
    return dataclasses.replace(probe, eval_opponent={"config": group.config, "weights": weights})
