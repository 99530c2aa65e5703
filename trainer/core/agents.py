"""Multi-agent runs: which agent acts with which policy, and what each policy is built from.

Every agent of the env (PettingZoo's `possible_agents`) maps to one policy: the first
`policy_mapping` pattern it matches, or the one policy when there is one (`shared` when the
config names none: parameter sharing). A policy's agents must see the same observation space
and act in the same action space. For its learner, a policy is a single-agent run whose "envs"
are agent slots: each worker holds envs_per_worker x (its agents per env) of them
(`Config.policy_config`). The probe made here, on the driver, is what workers and learners build
from, as the single-agent Probe is.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import Any

import torch
from gymnasium import spaces

from trainer.core.agent_envs import AgentEnv
from trainer.core.config import Config
from trainer.core.distributions import distribution_for
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.policy import build_policy, rollout_spec
from trainer.core.spec import ObsSpec

SHARED = "shared"  # the one policy's name when the config names none


class AgentMappingError(UserError):
    """Agents and policies that do not fit together."""


@dataclass(frozen=True)
class PolicyGroup:
    """One policy of a multi-agent run and the agents (of one env) that act with it."""

    name: str
    agents: tuple[str, ...]
    config: Config  # the run's config as this policy's learner sees it (Config.policy_config)
    probe: Probe  # its spaces, ObsSpec and RolloutSpec (with the `valid` flag)
    slots_per_env: int  # its agent slots in each env: its agents, or its trained seats in self-play

    def slot(self, env_index: int, agent: str) -> int:
        """The agent slot (a column of the policy's rollouts) of `agent` in env `env_index`."""
        return env_index * self.slots_per_env + self.agents.index(agent)


@dataclass(frozen=True)
class SelfPlaySeats:
    """Who plays whom in self-play: `policy` trains as `learners` (or, every other episode when
    seats swap, as `opponents`) while the other side acts with frozen snapshots."""

    policy: str
    learners: tuple[str, ...]
    opponents: tuple[str, ...]
    swap: bool

    @property
    def seats(self) -> int:
        """Agent slots per env of the trained side: the larger side when the sides swap."""
        return max(len(self.learners), len(self.opponents)) if self.swap else len(self.learners)

    def sides(self, swapped: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(trained agents, frozen agents) of an episode."""
        return (self.opponents, self.learners) if swapped else (self.learners, self.opponents)


@dataclass(frozen=True)
class AgentsProbe:
    """What the driver learned of a multi-agent env before anything runs."""

    env_id: str
    agents: tuple[str, ...]
    turn_based: bool
    groups: dict[str, PolicyGroup]
    reward_threshold: float | None
    self_play: SelfPlaySeats | None = None
    eval_opponent: dict | None = None  # eval.opponent's policy, a checkpoint's: its "config" and "weights"

    def only(self, name: str) -> AgentsProbe:
        """This probe as a learner holding policy `name` alone sees it (learner.actor_per_policy)."""
        seats = self.self_play if self.self_play is not None and self.self_play.policy == name else None
        return replace(self, groups={name: self.groups[name]}, self_play=seats)

    def policy_of(self, agent: str) -> str:
        return next(name for name, group in self.groups.items() if agent in group.agents)

    def describe(self) -> dict:
        """What a checkpoint records: each policy's agents, observation leaves and actions."""
        return {
            name: {
                "agents": list(group.agents),
                "observation": group.probe.obs_spec.describe(),
                "action": str(group.probe.action_space),
            }
            for name, group in self.groups.items()
        }


def describe_agents(probe: AgentsProbe, mask_key: str) -> list[str]:
    """What a run's start says of a PettingZoo env: who acts with which policy, and how."""
    turns = "one agent at a time (turn-based)" if probe.turn_based else "all live agents at each step"
    lines = [f"env {probe.env_id!r}: {len(probe.agents)} agents, {turns}"]
    for name, group in probe.groups.items():
        masked = f"; action masks from observation key {mask_key!r}" if group.probe.obs_spec.mask_key else ""
        lines.append(f"policy {name!r}: agents {', '.join(group.agents)} ({group.config.policy.kind}){masked}")
    if (seats := probe.self_play) is not None:
        swap = "; the sides swap every other episode" if seats.swap else ""
        lines.append(
            f"self-play: policy {seats.policy!r} trains as {', '.join(seats.learners)} against snapshots of itself "
            f"as {', '.join(seats.opponents)}{swap}"
        )
    return lines


def map_agents(agents: list[str], config: Config) -> dict[str, str]:
    """agent -> policy name, every agent mapped and every policy used, or one line saying what is not."""
    policies = list(config.policies) or [SHARED]
    mapping: dict[str, str] = {}
    for agent in agents:
        if not config.policy_mapping and len(policies) == 1:
            mapping[agent] = policies[0]
            continue
        match = next(
            (name for pattern, name in config.policy_mapping.items() if fnmatch.fnmatchcase(agent, pattern)), None
        )
        if match is None:
            raise AgentMappingError(
                f"agent {agent!r} of env {config.env.id!r} matches no pattern of policy_mapping "
                f"({', '.join(repr(p) for p in config.policy_mapping)}); add one, e.g. {agent!r}: {policies[0]}"
            )
        mapping[agent] = match
    unused = [name for name in policies if name not in mapping.values()]
    if unused:
        raise AgentMappingError(
            f"policies.{unused[0]}: no agent of env {config.env.id!r} maps to it (its agents: {', '.join(agents)}); "
            "map some in policy_mapping or remove the policy"
        )
    return mapping


def probe_agents(config: Config, made: Any | None = None) -> AgentsProbe:
    """The env's agents, their policies and each policy's spaces and rollout fields, from one
    throwaway env (`made`, where the caller has made it, is closed after); agents of one policy
    with different spaces are refused here."""
    env = AgentEnv(config.env, made)
    try:
        _refuse_single_agent_keys(config)
        agents = env.possible_agents
        mapping = map_agents(agents, config)
        seats = _self_play_seats(agents, mapping, config)
        groups = {}
        for name in dict.fromkeys(mapping.values()):
            members = tuple(agent for agent in agents if mapping[agent] == name)
            slots = seats.seats if seats is not None and seats.policy == name else len(members)
            groups[name] = _group(name, members, slots, env, config)
        return AgentsProbe(config.env.id, tuple(agents), env.turn_based, groups, config.env.reward_threshold, seats)
    finally:
        env.close()


def _self_play_seats(agents: list[str], mapping: dict[str, str], config: Config) -> SelfPlaySeats | None:
    """The self-play sides, each pattern matching some agent of the policy, neither side empty."""
    play = config.self_play
    if play is None:
        return None
    mine = [agent for agent in agents if mapping[agent] == play.policy]
    opponents = []
    for pattern in play.opponents:
        matched = [agent for agent in agents if fnmatch.fnmatchcase(agent, pattern)]
        if not matched:
            raise AgentMappingError(
                f"self_play.opponents: {pattern!r} matches no agent of env {config.env.id!r} ({', '.join(agents)})"
            )
        other = next((agent for agent in matched if mapping[agent] != play.policy), None)
        if other is not None:
            raise AgentMappingError(
                f"self_play.opponents: {pattern!r} matches agent {other!r}, which acts with policy {mapping[other]!r}; "
                f"opponents play snapshots of {play.policy!r}, so map them to it in policy_mapping"
            )
        opponents += [agent for agent in matched if agent not in opponents]
    learners = [agent for agent in mine if agent not in opponents]
    if not learners:
        raise AgentMappingError(
            f"self_play.opponents match every agent of policy {play.policy!r} ({', '.join(mine)}); leave it some "
            "to train"
        )
    return SelfPlaySeats(play.policy, tuple(learners), tuple(a for a in mine if a in opponents), play.swap_seats)


def _group(name: str, agents: tuple[str, ...], slots: int, env: AgentEnv, config: Config) -> PolicyGroup:
    first = agents[0]
    observation, action = env.observation_space(first), env.action_space(first)
    for agent in agents[1:]:
        for what, theirs, mine in (
            ("observation", env.observation_space(agent), observation),
            ("action", env.action_space(agent), action),
        ):
            if theirs != mine:
                raise AgentMappingError(
                    f"agents {first!r} and {agent!r} of env {config.env.id!r} share policy {name!r} but have different "
                    f"{what} spaces ({mine} and {theirs}); give them policies of their own (policies, policy_mapping)"
                )
    policy_config = _policy_config(name, slots, config)
    mask_key = _mask_key(observation, config)
    obs_spec = ObsSpec.from_space(
        observation, config.env.id, policy_config.policy.image_layout, mask_key, "observation" if mask_key else None
    )
    distribution_for(action, config.env.id)
    with torch.device("meta"):
        policy = build_policy(obs_spec, action, policy_config)
    spec = rollout_spec(obs_spec, policy, policy_config, padded=True)
    probe = Probe(observation, action, None, obs_spec, None, spec)
    return PolicyGroup(name, agents, policy_config, probe, slots)


def _policy_config(name: str, agents_per_env: int, config: Config) -> Config:
    """Config.policy_config, its sizes' problems named with the policy."""
    try:
        return config.policy_config(name, agents_per_env)
    except Exception as exc:  # a ValidationError of the derived config: its sizes
        problem = str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else str(exc)
        raise AgentMappingError(
            f"policy {name!r} ({agents_per_env} agents per env, so {config.workers.envs_per_worker * agents_per_env} "
            f"agent slots per worker): {problem.strip().removeprefix('Value error, ')}"
        ) from None


def _mask_key(space: spaces.Space, config: Config) -> str | None:
    """The observation key that holds an agent's action mask (PettingZoo's convention), if any."""
    mode, key = config.env.action_mask, config.env.action_mask_key
    if mode in ("info", "method"):
        raise AgentMappingError(
            f"env.action_mask: {mode} is for gymnasium envs; a PettingZoo env's masks are read from the "
            f"`{key}` key of its observations (env.action_mask: auto or observation)"
        )
    has = isinstance(space, spaces.Dict) and key in space.spaces
    if mode == "observation" and not has:
        raise AgentMappingError(
            f"env.action_mask: observation, but the observations of {config.env.id!r} have no key {key!r}"
        )
    return key if has and mode != "off" else None


def _refuse_single_agent_keys(config: Config) -> None:
    """Keys that act on gymnasium envs only, refused with what to do instead."""
    env, workers = config.env, config.workers
    if env.wrappers:
        raise AgentMappingError(
            f"env.wrappers wrap gymnasium envs; {env.id!r} is a PettingZoo env: wrap it in your factory instead"
        )
    if env.on_error != "stop":
        raise AgentMappingError(f"env.on_error: {env.on_error} resets gymnasium envs; a PettingZoo env's runs stop")
    if workers.vector_env != "sync":
        raise AgentMappingError(
            f"workers.vector_env: {workers.vector_env} is for gymnasium envs; PettingZoo envs run sync"
        )
