"""The multi-agent rollout worker: steps E PettingZoo envs T times, each agent acting with its
policy, and returns a rollout per policy whose "envs" are agent slots (env i's agents of that
policy, in order).

An agent's samples are its own turns, packed from the start of its slot: a sample (observation,
action, value) is written when the agent acts and completed (reward since then, ended or not) when
it next acts or ends. A slot whose agent acted fewer than T times (it waited for its turn, died
early, joined late) is padded to T with samples that are not `valid`. At the rollout's end a
sample still waiting for its agent's next observation is dropped (its value bootstraps the one
before), so rewards always reach the action that earned them, turns between included.
Shapes: T rollout steps, S agent slots of a policy, K sequence length.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from trainer.core.acting import Acting, to_env_actions
from trainer.core.action_masks import ActionMaskError, mask_sizes, no_legal_action
from trainer.core.agent_envs import AgentEnv, AgentStep
from trainer.core.agents import AgentsProbe, PolicyGroup
from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.messages import AgentRollouts, EpisodeStats, PolicySnapshot, Rollout
from trainer.core.normalization import RunningMeanStd
from trainer.core.policy import build_policy
from trainer.core.seeding import derive_seed
from trainer.core.spec import OBS_PREFIX
from trainer.core.timing import PhaseTimer
from workers.frozen_opponents import FrozenOpponents
from workers.rollout_worker import RolloutWorker


class EnvStepError(UserError):
    """The multi-agent env failed while being reset or stepped."""


class PolicySlots:
    """One policy's part of a worker: its network, its agent slots' acting state (recurrent
    state, episode starts, rewards since each agent last acted) and the rollout they fill."""

    def __init__(self, group: PolicyGroup, num_envs: int, env_id: str) -> None:
        self.group, self.gamma, self.env_id = group, group.config.ppo.gamma, env_id
        self.obs_spec, self.action_space = group.probe.obs_spec, group.probe.action_space
        self.spec = group.probe.rollout_spec
        self.policy = build_policy(self.obs_spec, self.action_space, group.config)
        self.policy.requires_grad_(False)
        self.slots = num_envs * group.slots_per_env
        self.acting = Acting(self.policy, self.action_space, self.slots)
        self.obs_delta = {leaf.key: RunningMeanStd(leaf.shape) for leaf in self.obs_spec.vector_leaves}
        self.return_delta = RunningMeanStd(())
        self.mask_sizes = mask_sizes(self.action_space) if self.obs_spec.mask_key else None
        self.start()

    def start(self) -> None:
        """Every slot at an episode start, no reward owed."""
        self.acting.start(self.slots)
        self.owed = np.zeros(self.slots)  # reward since the slot's agent last acted
        self.discounted = np.zeros(self.slots)  # the slot's discounted return so far (reward scaling)
        self.episode_return = np.zeros(self.slots)
        self.episode_length = np.zeros(self.slots, dtype=np.int64)
        self.pending = np.zeros(self.slots, dtype=bool)  # the newest sample awaits its reward

    def begin(self) -> None:
        """A fresh rollout: no sample written yet."""
        self.data = self.spec.allocate(self.slots)
        self.arrays = {name: tensor.numpy() for name, tensor in self.data.items()}
        self.count = np.zeros(self.slots, dtype=np.int64)
        self.returns_seen: list[np.ndarray] = []
        self.episodes = EpisodeStats()

    @torch.inference_mode()
    def act(self, slots: np.ndarray, observations: list, generator: torch.Generator) -> np.ndarray:
        """The agents in `slots` act on their observations: their previous samples are completed,
        new ones written; returns their env actions."""
        obs = self.obs_spec.stack(observations)
        if self.mask_sizes is not None and (
            problem := no_legal_action(obs[self.obs_spec.mask_key].numpy(), self.mask_sizes)
        ):
            raise ActionMaskError(
                f"env {self.env_id!r}: the action mask of an agent of policy {self.group.name!r} {problem}"
            )
        index = torch.from_numpy(slots)
        axis = self.policy.state_axis
        hidden, first = self.acting.hidden.index_select(axis, index), self.acting.first[index]
        action, logprob, value, next_hidden = self.policy.act(obs, hidden, first, generator=generator)
        if self.policy.recurrent:
            self.acting.hidden.index_copy_(axis, index, next_hidden)
        self.acting.first[index] = False
        self.complete(slots[self.pending[slots]])
        self._write(slots, obs, action, logprob, value, hidden, first)
        return to_env_actions(action.numpy(), self.action_space)

    def _write(self, slots, obs, action, logprob, value, hidden, first) -> None:
        rows, arrays = self.count[slots], self.arrays
        for key, x in obs.items():
            arrays[OBS_PREFIX + key][rows, slots] = x.numpy()
        arrays["actions"][rows, slots] = action.numpy()
        arrays["logprob"][rows, slots], arrays["value"][rows, slots] = logprob.numpy(), value.numpy()
        arrays["first"][rows, slots], arrays["valid"][rows, slots] = first.numpy(), True
        if self.policy.recurrent:  # the state at each sequence start, from before the step
            starts = rows % self.spec.sequence_length == 0
            if starts.any():
                axis = self.policy.state_axis
                where = (torch.from_numpy(rows[starts] // self.spec.sequence_length), *[slice(None)] * axis)
                chosen = torch.from_numpy(np.flatnonzero(starts))
                self.data["hidden"][(*where, torch.from_numpy(slots[starts]))] = hidden.index_select(
                    axis, chosen
                ).movedim(axis, 0)
        self.count[slots] += 1
        self.pending[slots] = True
        self.episode_length[slots] += 1

    def complete(self, slots: np.ndarray, terminated: bool = False, truncated: bool = False) -> np.ndarray:
        """Complete the pending samples of `slots` with the reward owed; returns their rows."""
        rows = self.count[slots] - 1
        reward = self.owed[slots]
        self.arrays["reward"][rows, slots] = reward
        self.arrays["terminated"][rows, slots], self.arrays["truncated"][rows, slots] = terminated, truncated
        self.discounted[slots] = self.discounted[slots] * self.gamma + reward
        self.returns_seen.append(self.discounted[slots].copy())
        if terminated or truncated:
            self.discounted[slots] = 0.0
        self.owed[slots], self.pending[slots] = 0.0, False
        return rows

    def reward(self, slot: int, value: float) -> None:
        self.owed[slot] += value
        self.episode_return[slot] += value

    def ended(self, slot: int, agent: str, terminated: bool, truncated: bool) -> int | None:
        """The slot's agent ended: its episode is counted and its next turn starts a new one.
        Returns the row of its completed sample (None if it had none pending)."""
        self.episodes.returns.append(float(self.episode_return[slot]))
        self.episodes.lengths.append(int(self.episode_length[slot]))
        self.episodes.agents.append(agent)
        self.episode_return[slot], self.episode_length[slot] = 0.0, 0
        self.acting.first[slot] = True
        if not self.pending[slot]:
            return None
        return int(self.complete(np.array([slot]), terminated, truncated)[0])

    @torch.inference_mode()
    def values(self, slots: np.ndarray, observations: list) -> np.ndarray:
        """V of the slots' agents' observations, each with its recurrent state, none reset."""
        if not len(slots):
            return np.zeros(0, dtype=np.float32)
        index = torch.from_numpy(slots)
        hidden = self.acting.hidden.index_select(self.policy.state_axis, index)
        first = torch.zeros(len(slots), dtype=torch.bool)
        return self.policy.value(self.obs_spec.stack(observations), hidden, first).numpy()

    def finish(self, waiting: dict[int, object], version: int, worker_index: int) -> Rollout:
        """End the rollout. `waiting`: slot -> observation of the agents that act next. Their
        pending samples complete, bootstrapping from V(that observation); the other pending ones
        (their agent waits for its turn) are dropped, bootstrapping the sample before."""
        slots = np.array(sorted(waiting), dtype=np.int64)
        last_value = self.arrays["last_value"]
        last_value[slots] = self.values(slots, [waiting[s] for s in slots])
        self.complete(slots[self.pending[slots]])
        dropped = np.flatnonzero(self.pending)
        rows = self.count[dropped] - 1
        self.arrays["valid"][rows, dropped] = False
        last_value[dropped] = self.arrays["value"][rows, dropped]
        self.count[dropped] -= 1
        self.pending[dropped] = False
        valid = self.data["valid"]
        for key, delta in self.obs_delta.items():
            delta.update(self.data[OBS_PREFIX + key][valid])
        if self.returns_seen:
            self.return_delta.update(torch.from_numpy(np.concatenate(self.returns_seen)))
        rollout = Rollout(
            version=version,
            worker_index=worker_index,
            tensors=self.data,
            obs_delta={key: delta.stats() for key, delta in self.obs_delta.items()},
            return_delta=self.return_delta.stats(),
            episodes=self.episodes,
            timings={},
        )
        for delta in self.obs_delta.values():
            delta.reset()
        self.return_delta.reset()
        return rollout


class MultiAgentRolloutWorker:
    """The rollout worker of a PettingZoo env: the RolloutWorker's interface, a rollout per policy."""

    def __init__(self, config: Config, worker_index: int, probe: AgentsProbe) -> None:
        self.config, self.index, self.probe = config, worker_index, probe
        E = config.workers.envs_per_worker
        self.envs = [AgentEnv(config.env) for _ in range(E)]
        self.groups = {name: PolicySlots(group, E, config.env.id) for name, group in probe.groups.items()}
        seats = probe.self_play
        self.frozen = FrozenOpponents(probe.groups[seats.policy], E, seats.seats) if seats is not None else None
        self.outcomes: list[tuple[int, float]] = []  # self-play: (snapshot id, result) of each episode
        self.generator = torch.Generator().manual_seed(derive_seed(config.seed, "worker actions", worker_index))
        self.total_steps = 0
        self.vector_steps = 0  # read by the Ray actor's liveness check, from another thread
        self.start_episodes(env_seed=derive_seed(config.seed, "worker envs", worker_index, bits=31))

    def start_episodes(self, env_seed: int) -> None:
        """Reset every env (env i with `env_seed + i`) and every slot's state."""
        for slots in self.groups.values():
            slots.start()
        if self.frozen is not None:
            self.frozen.start()
        E = len(self.envs)
        self.episodes_started = [0] * E
        self.score = np.zeros((E, 2))  # self-play: the trained and the frozen side's rewards this episode
        self.where: list[dict] = [{} for _ in range(E)]  # env i: agent -> (who acts it, its slot there)
        self.to_act = [self._reset(i, env_seed + i).to_act for i in range(E)]

    def _seats(self, i: int) -> dict[str, tuple[object, int]]:
        """Who acts each agent of env i in the episode it starts, in which slot: its policy's, or
        in self-play the trained side's or the frozen one's (the sides swapping every other episode)."""
        seats = self.probe.self_play
        where = {
            agent: (self.groups[name], group.slot(i, agent))
            for name, group in self.probe.groups.items()
            if seats is None or name != seats.policy
            for agent in group.agents
        }
        if seats is not None:
            trained, frozen = seats.sides(seats.swap and self.episodes_started[i] % 2 == 1)
            first = i * seats.seats
            where |= {agent: (self.groups[seats.policy], first + j) for j, agent in enumerate(trained)}
            where |= {agent: (self.frozen, first + j) for j, agent in enumerate(frozen)}
            self.frozen.new_episode(i)
        return where

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def resume(self, rng_state: torch.Tensor | None, iteration: int) -> None:
        """As RolloutWorker.resume: the sampling RNG as saved, episodes started afresh."""
        if rng_state is not None:
            self.generator.set_state(rng_state)
        self.start_episodes(env_seed=derive_seed(self.config.seed, "worker envs", self.index, iteration, bits=31))

    def load(self, snapshot: PolicySnapshot) -> None:
        for name, slots in self.groups.items():
            slots.policy.load_state_dict(snapshot.weights[name])
        if self.frozen is not None:
            self.frozen.load(snapshot.opponents)

    @torch.inference_mode()
    def collect(self, snapshot: PolicySnapshot) -> AgentRollouts:
        """T steps of every env, each agent acting with its policy."""
        started = time.perf_counter()
        self.load(snapshot)
        T = self.config.ppo.rollout_steps
        timer = PhaseTimer()
        for slots in self.groups.values():
            slots.begin()
        for t in range(T):
            tick = time.perf_counter()
            actions = self._act()
            tock = time.perf_counter()
            timer.add("forward", tock - tick)
            self._step(actions, t)
            self.vector_steps += 1
            timer.add("env", time.perf_counter() - tock)
        waiting: dict = {slots: {} for slots in self.groups.values()}
        for i, to_act in enumerate(self.to_act):
            for agent, obs in to_act.items():
                target, slot = self.where[i][agent]
                if target is not self.frozen:
                    waiting[target][slot] = obs
        parts = {
            name: slots.finish(waiting[slots], snapshot.version, self.index) for name, slots in self.groups.items()
        }
        self.total_steps += T * len(self.envs)
        timer.add("rollout", time.perf_counter() - started)
        episodes = EpisodeStats.concat([part.episodes for part in parts.values()])
        outcomes, self.outcomes = self.outcomes, []
        return AgentRollouts(snapshot.version, self.index, parts, episodes, timer.take(), outcomes)

    def _act(self) -> list[dict]:
        """Every agent that acts now, batched by who acts it (a policy's slots, self-play's frozen
        seats) -> per env, agent -> env action."""
        asked: dict = {}  # who acts them -> (their slots, observations, (env, agent))
        for i, to_act in enumerate(self.to_act):
            for agent, obs in to_act.items():
                target, slot = self.where[i][agent]
                batch = asked.setdefault(target, ([], [], []))
                batch[0].append(slot)
                batch[1].append(obs)
                batch[2].append((i, agent))
        actions: list[dict] = [{} for _ in self.envs]
        for target, (which, observations, agents) in asked.items():
            if which:
                chosen = target.act(np.array(which, dtype=np.int64), observations, self.generator)
                for (i, agent), action in zip(agents, chosen):
                    actions[i][agent] = action
        return actions

    def _step(self, actions: list[dict], t: int) -> None:
        """Step every env; rewards, ends and resets reach the agents' slots."""
        truncations: dict[PolicySlots, tuple[list, list, list]] = {}
        for i, env in enumerate(self.envs):
            try:
                step = env.step(actions[i])
            except Exception as exc:
                where = f"(worker {self.index}, env step {self.total_steps + t * len(self.envs)})"
                raise self._env_error(exc, where) from exc
            self._deliver(i, step, truncations)
            if step.over:
                self._score(i)
                step = self._reset(i, None)
            self.to_act[i] = step.to_act
        for slots, (which, rows, observations) in truncations.items():
            slots.arrays["bootstrap_value"][rows, which] = slots.values(np.array(which), observations)

    def _deliver(self, i: int, step: AgentStep, truncations: dict) -> None:
        for agent, reward in step.rewards.items():
            target, slot = self.where[i][agent]
            target.reward(slot, reward)
            self.score[i, int(target is self.frozen)] += reward
        for agent, (final_obs, terminated, truncated) in step.ended.items():
            target, slot = self.where[i][agent]
            row = target.ended(slot, agent, terminated, truncated)
            if row is not None and truncated and not terminated:
                which, rows, observations = truncations.setdefault(target, ([], [], []))
                which.append(slot)
                rows.append(row)
                observations.append(final_obs)

    def _score(self, i: int) -> None:
        """Self-play: env i's episode is over; its result for the trained side against its snapshot."""
        if self.frozen is not None and self.frozen.member[i] is not None:
            trained, frozen = self.score[i]
            self.outcomes.append((self.frozen.member[i], float(np.sign(trained - frozen))))
        self.score[i] = 0.0

    def _reset(self, i: int, seed: int | None) -> AgentStep:
        try:
            step = self.envs[i].reset(seed=seed)
        except Exception as exc:
            raise self._env_error(exc, f"on reset (worker {self.index})") from exc
        self.where[i] = self._seats(i)
        self.episodes_started[i] += 1
        return step

    def _env_error(self, exc: Exception, where: str) -> EnvStepError:
        if isinstance(exc, UserError):
            return EnvStepError(f"{exc} {where}")
        return EnvStepError(f"env {self.config.env.id!r} raised {type(exc).__name__}: {exc} {where}")

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_rollout_worker(config: Config, worker_index: int, probe: Probe | AgentsProbe):
    """The rollout worker the env needs: a PettingZoo env's (its probe an AgentsProbe), else a gymnasium env's."""
    if isinstance(probe, AgentsProbe):
        return MultiAgentRolloutWorker(config, worker_index, probe)
    return RolloutWorker(config, worker_index, probe)
