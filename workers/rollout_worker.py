"""The rollout worker: steps E envs with the snapshot's policy and frozen normalizer stats.

A plain class that runs in-process (inline mode) or inside a Ray actor. Episodes continue
across iterations: the worker keeps the envs, the next observation and the recurrent state.
Shapes: T rollout steps, E envs, K sequence length, C = T / K chunks.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from trainer.core.config import Config
from trainer.core.distributions import distribution_for
from trainer.core.envs import make_vector_env, to_env_actions
from trainer.core.errors import UserError
from trainer.core.messages import EpisodeStats, PolicySnapshot, Rollout
from trainer.core.normalization import RunningMeanStd, standardize
from trainer.core.policy import build_policy, observation_dim


class EnvStepError(UserError):
    """The environment itself failed or produced non-finite values."""


class RolloutWorker:
    def __init__(self, config: Config, worker_index: int) -> None:
        self.config = config
        self.index = worker_index
        E = config.workers.envs_per_worker
        torch.set_num_threads(config.workers.torch_threads)
        self.envs = make_vector_env(config.env, E)
        self.action_space = self.envs.single_action_space
        obs_dim = observation_dim(self.envs.single_observation_space)
        self.policy = build_policy(obs_dim, distribution_for(self.action_space), config.policy)
        self.policy.requires_grad_(False)
        self.obs_moments = RunningMeanStd((obs_dim,)).moments()  # frozen (mean, std) of the snapshot
        self.obs_delta = RunningMeanStd((obs_dim,))  # what this worker saw since the snapshot
        self.return_delta = RunningMeanStd(())
        self.version = -1
        self.generator = torch.Generator().manual_seed(config.seed * 10_000 + 7919 * (worker_index + 1))
        self.total_steps = 0
        self.env_failures = 0
        self.start_episodes(env_seed=config.seed * 10_000 + worker_index * E)

    def start_episodes(self, env_seed: int) -> None:
        """Reset every env (seeded) and the per-episode state: a fresh start or a resume."""
        E = self.config.workers.envs_per_worker
        obs, _ = self.envs.reset(seed=env_seed)
        self.next_obs = torch.as_tensor(obs, dtype=torch.float32)
        self.next_first = torch.ones(E, dtype=torch.bool)
        self.hidden = self.policy.initial_hidden(E)
        self.discounted_return = np.zeros(E)
        self.episode_return = np.zeros(E)
        self.episode_length = np.zeros(E, dtype=np.int64)

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def resume(self, rng_state: torch.Tensor, iteration: int) -> None:
        """Continue a checkpointed run: the sampling RNG as saved, envs re-seeded per iteration
        (gymnasium has no API to save an env's internal state, so episodes start afresh)."""
        self.generator.set_state(rng_state)
        E = self.config.workers.envs_per_worker
        self.start_episodes(env_seed=self.config.seed * 10_000 + self.index * E + 1_000_003 * iteration)

    def load(self, snapshot: PolicySnapshot) -> None:
        self.policy.load_state_dict(snapshot.weights)
        self.obs_moments = RunningMeanStd.from_stats(snapshot.obs_stats).moments()
        self.version = snapshot.version

    def _normalize(self, obs: torch.Tensor, snapshot: PolicySnapshot) -> torch.Tensor:
        return standardize(obs, *self.obs_moments, snapshot.obs_clip) if snapshot.normalize_obs else obs

    @torch.inference_mode()
    def collect(self, snapshot: PolicySnapshot) -> Rollout:
        """Run T steps on every env with the snapshot's policy; return plain CPU tensors."""
        self.load(snapshot)
        ppo = self.config.ppo
        T, E, K = ppo.rollout_steps, self.config.workers.envs_per_worker, self.config.sequence_length
        obs_dim = self.next_obs.shape[1]
        dist = self.policy.dist
        obs = torch.empty(T, E, obs_dim)
        actions = torch.empty(T, E, dist.action_dim, dtype=dist.action_dtype)
        logprob, value, reward = torch.empty(T, E), torch.empty(T, E), torch.empty(T, E)
        terminated, truncated, first = (torch.empty(T, E, dtype=torch.bool) for _ in range(3))
        bootstrap_value = torch.zeros(T, E)
        hidden = torch.empty(T // K, *self.hidden.shape)
        discounted_returns = np.empty((T, E))
        episodes = EpisodeStats()
        env_time = forward_time = 0.0

        for t in range(T):
            if t % K == 0:
                hidden[t // K] = self.hidden
            tick = time.perf_counter()
            obs[t], first[t] = self.next_obs, self.next_first
            action, logprob[t], value[t], self.hidden = self.policy.act(
                self._normalize(self.next_obs, snapshot), self.hidden, self.next_first, generator=self.generator
            )
            actions[t] = action
            tock = time.perf_counter()
            forward_time += tock - tick
            next_obs, rew, term, trunc, info = self._step(action.numpy(), t)
            env_time += time.perf_counter() - tock

            reward[t] = torch.from_numpy(rew)
            terminated[t], truncated[t] = torch.from_numpy(term), torch.from_numpy(trunc)
            if trunc.any():
                bootstrap_value[t] = self._final_values(info, trunc, snapshot)
            done = term | trunc
            discounted_returns[t] = self._track_episodes(rew, done, episodes)
            self.next_obs = torch.from_numpy(next_obs).float()
            self.next_first = torch.from_numpy(done)

        last_value = self.policy.value(self._normalize(self.next_obs, snapshot), self.hidden, self.next_first)
        self.total_steps += T * E
        # The deltas cover exactly the observations normalized (and returns seen) in this rollout.
        self.obs_delta.update(obs)
        self.return_delta.update(torch.from_numpy(discounted_returns))
        rollout = Rollout(
            version=snapshot.version,
            worker_index=self.index,
            obs=obs,
            actions=actions,
            logprob=logprob,
            value=value,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            first=first,
            bootstrap_value=bootstrap_value,
            last_value=last_value,
            hidden=hidden,
            obs_delta=self.obs_delta.stats(),
            return_delta=self.return_delta.stats(),
            episodes=episodes,
            timings={"env_s": env_time, "forward_s": forward_time, "env_failures": float(self.env_failures)},
        )
        self.obs_delta.reset()
        self.return_delta.reset()
        return rollout

    def _step(self, action: np.ndarray, t: int) -> tuple[np.ndarray, ...]:
        """Step all envs. A failing env stops the run with its id, worker and step, or, with
        `env.on_error: reset`, is reset and its step recorded as a zero-reward termination."""
        env_id, reset = self.config.env.id, self.config.env.on_error == "reset"
        where = f"worker {self.index}, env step {self.total_steps + t * len(action)}"
        try:
            next_obs, rew, term, trunc, info = self.envs.step(to_env_actions(action, self.action_space))
        except Exception as exc:  # the env's own code failed: name it, not the Ray plumbing
            if not reset:
                raise EnvStepError(f"env {env_id!r} raised {type(exc).__name__}: {exc} ({where})") from exc
            return self._reset_failed(np.ones(len(action), dtype=bool))
        bad = ~(np.isfinite(next_obs).all(axis=1) & np.isfinite(rew))
        if bad.any():
            if not reset:
                raise EnvStepError(
                    f"env {env_id!r} returned a NaN or inf observation or reward ({where}); "
                    "set env.on_error: reset to reset such envs instead"
                )
            next_obs, rew, term, trunc = next_obs.copy(), rew.copy(), term.copy(), trunc.copy()
            next_obs[bad] = self._reset_failed(bad)[0][bad]
            rew[bad], term[bad], trunc[bad] = 0.0, True, False
        return next_obs, rew.astype(np.float32), term, trunc, info

    def _reset_failed(self, failed: np.ndarray) -> tuple[np.ndarray, ...]:
        """Reset the failed envs; their step becomes a zero-reward termination."""
        E = len(failed)
        self.env_failures += int(failed.sum())
        if failed.all():
            obs, _ = self.envs.reset()
        else:
            obs = self.next_obs.numpy().copy()
            for i in np.flatnonzero(failed):
                obs[i] = self.envs.envs[i].reset()[0]
        return obs, np.zeros(E, dtype=np.float32), failed.copy(), np.zeros(E, dtype=bool), {}

    def _final_values(self, info: dict, truncated: np.ndarray, snapshot: PolicySnapshot) -> torch.Tensor:
        """V(final observation) of each truncated env, continuing that env's recurrent state."""
        index = np.flatnonzero(truncated)
        final_obs = torch.as_tensor(np.stack([info["final_obs"][i] for i in index]), dtype=torch.float32)
        no_reset = torch.zeros(len(index), dtype=torch.bool)
        values = torch.zeros(len(truncated))
        values[index] = self.policy.value(self._normalize(final_obs, snapshot), self.hidden[:, :, index], no_reset)
        return values

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray, episodes: EpisodeStats) -> np.ndarray:
        """Fold one step into the running episode stats; returns the discounted returns so far
        (what reward scaling normalizes by)."""
        self.discounted_return = self.discounted_return * self.config.ppo.gamma + reward
        discounted = self.discounted_return.copy()
        self.discounted_return[done] = 0.0
        self.episode_return += reward
        self.episode_length += 1
        for i in np.flatnonzero(done):
            episodes.returns.append(float(self.episode_return[i]))
            episodes.lengths.append(int(self.episode_length[i]))
        self.episode_return[done] = 0.0
        self.episode_length[done] = 0
        return discounted

    def close(self) -> None:
        self.envs.close()
