"""Vector envs for the workers and evaluation, and the probe the driver makes first.

Vector envs reset finished sub-envs in the same step (gymnasium's SAME_STEP autoreset), so the
observation returned after an episode ends is the next episode's first, and the final
observation of the ended one is in `info["final_obs"]` for the truncation bootstrap. One env is
made by env_making.py, in this process (sync) or in a subprocess per env (async).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from dataclasses import dataclass
from functools import cache, partial

import gymnasium as gym
import torch
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from trainer.core.action_masks import MaskInObservation, find_mask_source
from trainer.core.config import Config, EnvConfig, PolicyConfig
from trainer.core.distributions import distribution_for
from trainer.core.env_making import entry_point, make_env, make_registered_env
from trainer.core.envpool_envs import EnvPoolVectorEnv, envpool_task
from trainer.core.errors import UserError
from trainer.core.policy import build_policy, rollout_spec
from trainer.core.spec import ObsSpec, RolloutSpec

ASYNC_CONTEXT = "forkserver"


@cache
def _preload_forkserver() -> None:
    """Tell the forkserver what to import, once per process before its first async vector env.

    Their subprocesses fork from a server that has imported the main module once (a Ray worker's,
    or the CLI's) and the env-making code, not torch: each starts in milliseconds and shares those
    pages. A script that starts them needs the `if __name__ == "__main__":` guard."""
    multiprocessing.get_context(ASYNC_CONTEXT).set_forkserver_preload(["__main__", "trainer.core.env_making"])


class CheckObservations(gym.ObservationWrapper):
    """Stops with one clear line when an observation stops fitting the env's observation space
    (a changed shape or dtype, a Dict key gone), instead of a failure deep in the batching."""

    def __init__(self, env: gym.Env, obs_spec: ObsSpec) -> None:
        super().__init__(env)
        self.obs_spec = obs_spec

    def observation(self, observation):
        problem = self.obs_spec.mismatch(observation)
        if problem is not None:
            raise ObservationMismatch(problem)
        return observation


class ObservationMismatch(UserError):
    """An observation that no longer fits the observation space the run started with."""


def make_vector_env(
    config: EnvConfig,
    num_envs: int,
    render_first: bool = False,
    mode: str = "sync",
    registry_spec=None,
    mask_source: str | None = None,
) -> VectorEnv:
    """E copies of the env (actions are converted and clipped by the acting loop,
    trainer/core/acting.py). `mode`: `sync` steps them one after another in this process;
    `async` steps each in a subprocess of its own, all at once (see WorkersConfig.vector_env).
    `render_first`: env 0 renders RGB frames (sync only). `registry_spec`: the driver's
    registration of `env.id`, for the subprocesses. `envpool`: see envpool_envs.py.
    `mask_source`: where the env keeps its action masks, as the probe found (ObsSpec.mask_source)."""
    if mode == "envpool":
        return EnvPoolVectorEnv(config, num_envs)
    if mode == "async":
        factory = partial(make_registered_env, config, registry_spec, mask_source)
        _preload_forkserver()
        return AsyncVectorEnv(
            [factory] * num_envs, context=ASYNC_CONTEXT, autoreset_mode=AutoresetMode.SAME_STEP, daemon=True
        )

    def checked(render_mode: str | None = None) -> gym.Env:
        env = make_env(config, render_mode=render_mode, mask_source=mask_source)
        obs_spec = ObsSpec.from_space(env.observation_space, config.id)
        # A flat float vector needs no check per step: the vector env's batching refuses another
        # shape itself, and any float dtype is converted anyway.
        if not obs_spec.single_vector:
            env = CheckObservations(env, obs_spec)
        return env

    factories = [lambda i=i: checked("rgb_array" if render_first and i == 0 else None) for i in range(num_envs)]
    return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)


@dataclass(frozen=True)
class Probe:
    """What one throwaway env tells before anything runs. With the run's `rollout_spec` (see
    `probe_run`) it is what learner, workers and evaluation worker are built from: frozen data,
    derived once on the driver."""

    observation_space: spaces.Space
    action_space: spaces.Space
    reward_threshold: float | None
    obs_spec: ObsSpec
    registry_spec: gym.envs.registration.EnvSpec | None  # shipped to workers that lack the id
    rollout_spec: RolloutSpec | None = None


def probe_env(config: EnvConfig, policy: PolicyConfig | None = None) -> Probe:
    """Spaces, observation spec and solved threshold, from one throwaway env; an unsupported
    space fails here, before anything is written."""
    env = make_env(config)
    try:
        layout = policy.image_layout if policy is not None else "auto"
        mask_source = find_mask_source(env, config)
        if mask_source is not None:
            env = MaskInObservation(env, mask_source, config.action_mask_key, config.id)
            if mask_source != "observation":
                env.reset()  # the mask's size, checked at start (an observation key's is, by its space)
        mask_key = config.action_mask_key if mask_source is not None else None
        obs_spec = ObsSpec.from_space(env.observation_space, config.id, layout, mask_key, mask_source)
        distribution_for(env.action_space, config.id)
        spec_threshold = env.spec.reward_threshold if env.spec is not None else None
        threshold = config.reward_threshold if config.reward_threshold is not None else spec_threshold
        registry_spec = gym.registry.get(config.id.rpartition(":")[2]) if entry_point(config.id) is None else None
        return Probe(env.observation_space, env.action_space, threshold, obs_spec, registry_spec)
    finally:
        env.close()


def probe_run(config: Config) -> Probe:
    """The env's probe with this run's RolloutSpec (its fields, K included), from a policy built
    on the meta device: shapes only, nothing allocated."""
    probe = probe_env(config.env, config.policy)
    if config.workers.vector_env == "envpool":
        envpool_task(config.env)  # a config EnvPool cannot run is refused before anything starts
        if probe.obs_spec.mask_source is not None:
            raise UserError(
                f"env {config.env.id!r} gives action masks, which EnvPool's envs do not; set workers.vector_env: sync "
                "(or env.action_mask: off)"
            )
    with torch.device("meta"):
        policy = build_policy(probe.obs_spec, probe.action_space, config)
    return dataclasses.replace(probe, rollout_spec=rollout_spec(probe.obs_spec, policy, config))


def check_same_spaces(envs: VectorEnv, probe: Probe, who: str, env_id: str) -> None:
    """A worker's envs must have the spaces the driver's probe found (its policy and rollout fields
    are built from them): a node with another version of the env's package is refused here."""
    here = (envs.single_observation_space, envs.single_action_space)
    if here != (probe.observation_space, probe.action_space):
        raise UserError(
            f"{who}: env {env_id!r} has observation space {here[0]} and action space {here[1]} on this node, "
            f"but {probe.observation_space} and {probe.action_space} on the driver; install the same version "
            "of the env's package everywhere"
        )
