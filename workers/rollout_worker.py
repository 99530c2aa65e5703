"""The rollout worker: steps E envs with the snapshot's policy, whose preprocessor holds the
frozen observation stats.

A plain class that runs in-process (inline mode) or inside a Ray actor. Episodes continue
across iterations: the worker keeps the envs, the next observation and the recurrent state.
Observations stay as the env gives them (uint8 images included) until the policy's preprocessor.
Shapes: T rollout steps, E envs, K sequence length, C = T / K chunks.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from trainer.core.acting import Acting, finished_episodes
from trainer.core.action_masks import ActionMaskError
from trainer.core.config import Config
from trainer.core.env_making import ensure_registered
from trainer.core.envs import ObservationMismatch, Probe, check_same_spaces, make_vector_env
from trainer.core.errors import UserError
from trainer.core.messages import EpisodeStats, PolicySnapshot, Rollout
from trainer.core.normalization import RunningMeanStd
from trainer.core.policy import build_policy
from trainer.core.seeding import derive_seed
from trainer.core.spec import OBS_PREFIX, pick_leaf
from trainer.core.timing import PhaseTimer


class EnvStepError(UserError):
    """The environment itself failed or produced non-finite values."""


class RolloutWorker:
    def __init__(self, config: Config, worker_index: int, probe: Probe) -> None:
        """`probe`: what the driver derived from the env (spaces, ObsSpec, RolloutSpec, and its
        registration of `env.id`, for ids only it registered)."""
        self.config = config
        self.index = worker_index
        E = config.workers.envs_per_worker
        ensure_registered(config.env, probe.registry_spec)
        self.envs = make_vector_env(
            config.env,
            E,
            mode=config.workers.vector_env,
            registry_spec=probe.registry_spec,
            mask_source=probe.obs_spec.mask_source,
        )
        check_same_spaces(self.envs, probe, f"rollout worker {worker_index}", config.env.id)
        self.obs_spec, self.action_space = probe.obs_spec, probe.action_space
        self.policy = build_policy(self.obs_spec, self.action_space, config)
        self.policy.requires_grad_(False)
        self.acting = Acting(self.policy, self.action_space, E)
        self.rollout_spec = probe.rollout_spec
        # What this worker saw since the snapshot, per vector leaf; the learner merges the deltas.
        self.obs_delta = {leaf.key: RunningMeanStd(leaf.shape) for leaf in self.obs_spec.vector_leaves}
        self.return_delta = RunningMeanStd(())
        self.generator = torch.Generator().manual_seed(derive_seed(config.seed, "worker actions", worker_index))
        self.total_steps = 0
        self.vector_steps = 0  # read by the Ray actor's liveness check, from another thread
        self.env_failures = 0
        self.start_episodes(env_seed=derive_seed(config.seed, "worker envs", worker_index, bits=31))

    def start_episodes(self, env_seed: int) -> None:
        """Reset every env (env i with `env_seed + i`) and the per-episode state: a fresh start or a resume."""
        E = self.config.workers.envs_per_worker
        try:
            obs, _ = self.envs.reset(seed=env_seed)
        except Exception as exc:
            raise self._env_error(exc, "on reset") from exc
        self.next_obs = self.obs_spec.batch(obs)
        self.acting.start(E)
        self.discounted_return = np.zeros(E)

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def resume(self, rng_state: torch.Tensor | None, iteration: int) -> None:
        """Continue a checkpointed run: the sampling RNG as saved (None: a worker the run did not
        have before keeps its own), envs re-seeded per iteration (gymnasium has no API to save an
        env's internal state, so episodes start afresh)."""
        if rng_state is not None:
            self.generator.set_state(rng_state)
        self.start_episodes(env_seed=derive_seed(self.config.seed, "worker envs", self.index, iteration, bits=31))

    def load(self, snapshot: PolicySnapshot) -> None:
        self.policy.load_state_dict(snapshot.weights)

    @torch.inference_mode()
    def collect(self, snapshot: PolicySnapshot) -> Rollout:
        """Run T steps on every env with the snapshot's policy; return plain CPU tensors."""
        started = time.perf_counter()
        self.load(snapshot)
        spec, E = self.rollout_spec, self.config.workers.envs_per_worker
        T, K = spec.rollout_steps, spec.sequence_length
        acting = self.acting
        data = self.rollout_spec.allocate(E)
        # Per-step writes go through numpy views of the rollout's tensors: ~10x cheaper than
        # torch's indexing at a few dozen envs.
        arrays = {name: tensor.numpy() for name, tensor in data.items()}
        obs = {key: arrays[OBS_PREFIX + key] for key in self.obs_spec.keys}
        logprob, value, reward, first = arrays["logprob"], arrays["value"], arrays["reward"], arrays["first"]
        actions, terminated, truncated = arrays["actions"], arrays["terminated"], arrays["truncated"]
        recurrent = data["hidden"].numel() > 0
        discounted_returns = np.empty((T, E))
        episodes = EpisodeStats()
        timer = PhaseTimer()

        for t in range(T):
            if recurrent and t % K == 0:
                data["hidden"][t // K] = acting.hidden
            tick = time.perf_counter()
            for key, x in self.next_obs.items():
                obs[key][t] = x.numpy()
            first[t] = acting.first.numpy()
            action, logprob_t, value_t = acting.act(self.next_obs, generator=self.generator)
            actions[t], logprob[t], value[t] = action.numpy(), logprob_t.numpy(), value_t.numpy()
            tock = time.perf_counter()
            timer.add("forward", tock - tick)
            self.next_obs, rew, term, trunc, info = self._step(action, t)
            self.vector_steps += 1
            timer.add("env", time.perf_counter() - tock)

            reward[t], terminated[t], truncated[t] = rew, term, trunc
            if trunc.any():
                data["bootstrap_value"][t] = self._final_values(info, trunc)
            done = term | trunc
            discounted_returns[t] = self._discounted_returns(rew, done)
            finished_episodes(info, episodes)
            acting.ended(done)

        data["last_value"][:] = self.policy.value(self.next_obs, acting.hidden, acting.first)
        self.total_steps += T * E
        # The deltas cover exactly the observations collected (and returns seen) in this rollout.
        for key, delta in self.obs_delta.items():
            delta.update(data[OBS_PREFIX + key])
        self.return_delta.update(torch.from_numpy(discounted_returns))
        timer.add("rollout", time.perf_counter() - started)  # the whole collection, as its caller waits on it
        rollout = Rollout(
            version=snapshot.version,
            worker_index=self.index,
            tensors=data,
            obs_delta={key: delta.stats() for key, delta in self.obs_delta.items()},
            return_delta=self.return_delta.stats(),
            episodes=episodes,
            timings=timer.take() | {"env_failures": float(self.env_failures)},
        )
        for delta in self.obs_delta.values():
            delta.reset()
        self.return_delta.reset()
        return rollout

    def _step(self, action: torch.Tensor, t: int) -> tuple:
        """Step all envs -> next obs leaves, reward, terminated, truncated, info. A failing env
        stops the run with its id, worker and step, or, with `env.on_error: reset`, is reset and
        its step recorded as a zero-reward termination."""
        reset = self.config.env.on_error == "reset"
        try:
            next_obs, rew, term, trunc, info = self.envs.step(self.acting.env_actions(action))
        except Exception as exc:  # the env's own code failed: name it, not the Ray plumbing
            if not reset or isinstance(exc, ObservationMismatch | ActionMaskError):
                raise self._env_error(exc, f"({self._where(t)})") from exc
            return self._reset_failed(np.ones(len(action), dtype=bool), self.next_obs)
        obs = self.obs_spec.batch(next_obs)  # float leaves as stored: float32
        with np.errstate(over="ignore"):  # a float64 past float32's range becomes inf, judged below
            stored_rew = rew.astype(np.float32)
        if self._all_finite(obs, stored_rew):
            return obs, stored_rew, term, trunc, info
        bad = ~(self._finite(obs) & np.isfinite(stored_rew))
        if not reset:
            raise EnvStepError(self._non_finite(next_obs, rew, self._where(t)))
        obs, term, trunc = self._reset_failed(bad, obs)[0], term.copy(), trunc.copy()
        stored_rew[bad], term[bad], trunc[bad] = 0.0, True, False
        return obs, stored_rew, term, trunc, info

    def _where(self, t: int) -> str:
        E = self.config.workers.envs_per_worker
        return f"worker {self.index}, env step {self.total_steps + t * E}"

    def _all_finite(self, obs: dict[str, torch.Tensor], reward: np.ndarray) -> bool:
        """The common case in one check per leaf; `_finite` then finds the envs at fault."""
        return bool(np.isfinite(reward).all()) and all(
            np.isfinite(obs[leaf.key].numpy()).all() for leaf in self.obs_spec.vector_leaves
        )

    def _non_finite(self, next_obs, reward: np.ndarray, where: str) -> str:
        """Why a step's values, as stored (float32), are not all finite: a NaN or inf from the env,
        or a finite float64 that overflows float32 (named with its value)."""
        env = f"env {self.config.env.id!r}"
        given = {"a reward": reward}
        for leaf in self.obs_spec.vector_leaves:
            at = "" if self.obs_spec.is_single else f" at {leaf.key!r}"
            given[f"an observation value{at}"] = np.asarray(pick_leaf(next_obs, leaf.key))
        if not all(np.isfinite(value).all() for value in given.values()):
            return (
                f"{env} returned a NaN or inf observation or reward ({where}); "
                "set env.on_error: reset to reset such envs instead"
            )
        largest = {what: value.flat[np.abs(value).argmax()] for what, value in given.items() if value.size}
        what, value = max(largest.items(), key=lambda item: abs(item[1]))
        return (
            f"{env} returned {what} of {value:g}, which overflows float32 ({where}); scale it down in the env or "
            "with a wrapper in env.wrappers, or set env.on_error: reset to reset such envs instead"
        )

    def _env_error(self, exc: Exception, where: str) -> EnvStepError:
        if isinstance(exc, ActionMaskError):  # names the env itself
            return EnvStepError(f"{exc} {where}")
        if isinstance(exc, ObservationMismatch):
            return EnvStepError(f"env {self.config.env.id!r}: {exc} {where}")
        return EnvStepError(f"env {self.config.env.id!r} raised {type(exc).__name__}: {exc} {where}")

    def _finite(self, obs: dict[str, torch.Tensor]) -> np.ndarray:
        """Per env: every float observation value is finite."""
        finite = np.ones(self.config.workers.envs_per_worker, dtype=bool)
        for leaf in self.obs_spec.vector_leaves:  # numpy: a tenth of torch's per-call cost on a few envs
            finite &= np.isfinite(obs[leaf.key].numpy()).reshape(len(finite), -1).all(1)
        return finite

    def _reset_failed(self, failed: np.ndarray, obs: dict[str, torch.Tensor]) -> tuple:
        """Reset the failed envs (their observations replaced in `obs`); their step becomes a
        zero-reward termination."""
        E = len(failed)
        self.env_failures += int(failed.sum())
        if failed.all():
            obs = self.obs_spec.batch(self.envs.reset()[0])
        else:
            index = np.flatnonzero(failed)
            fresh = self.obs_spec.stack(self.envs.envs[i].reset()[0] for i in index)
            obs = {key: x.clone() for key, x in obs.items()}
            for key, x in obs.items():
                x[index] = fresh[key]
        return obs, np.zeros(E, dtype=np.float32), failed.copy(), np.zeros(E, dtype=bool), {}

    def _final_values(self, info: dict, truncated: np.ndarray) -> torch.Tensor:
        """V(final observation) of each truncated env, continuing that env's recurrent state."""
        index = np.flatnonzero(truncated)
        final_obs = self.obs_spec.stack(info["final_obs"][i] for i in index)
        no_reset = torch.zeros(len(index), dtype=torch.bool)
        values = torch.zeros(len(truncated))
        state = self.acting.hidden.index_select(self.policy.state_axis, torch.from_numpy(index))
        values[index] = self.policy.value(final_obs, state, no_reset)
        return values

    def _discounted_returns(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The discounted returns so far of each env's training episode (what reward scaling
        normalizes by)."""
        self.discounted_return = self.discounted_return * self.config.ppo.gamma + reward
        discounted = self.discounted_return.copy()
        self.discounted_return[done] = 0.0
        return discounted

    def close(self) -> None:
        self.envs.close()
