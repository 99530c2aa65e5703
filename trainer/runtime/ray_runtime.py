"""The Ray runtime: rollout-worker actors and a learner actor, with worker fault handling.

Per iteration the learner returns ONE snapshot object that every worker reads from the object
store. Workers live in host processes (workers.per_process to a process), one call a host per
iteration. Each host returns its workers' small RolloutInfos as one object the driver waits on
(one wait for all hosts), and each worker's rollout as an object whose reference the driver hands
on as an argument of the learner's one update call, so Ray delivers every rollout with that call.
A worker that dies, or takes no env step for `workers.sample_timeout_s`, is replaced and its share
collected again with the same snapshot, so an iteration never mixes versions or half rollouts;
a host is replaced as a whole, and all its workers collect again. A learner that dies is rebuilt
from its newest state (see learner_group.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray
from ray import exceptions as ray_errors

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.messages import EpisodeStats
from trainer.core.timing import PhaseTimer
from trainer.runtime.actors import (
    ACTOR_LOST,
    kill_quietly,
    lost_reason,
    retry_on_loss,
    unwrap_user_errors,
    wait_started,
)
from trainer.runtime.checkpoint import capture_rng, restore_rng, worker_rng_states
from trainer.runtime.learner_group import LearnerGroup, LearnerLost
from trainer.runtime.placement import ensure_fits, host_name, scheduling_strategy, worker_hosts
from trainer.runtime.policy_learners import PolicyLearners, learner_for
from trainer.runtime.ray_connect import connect, disconnect
from trainer.runtime.stats import IterationStats, LearnerState
from workers.ray_worker import LIVENESS_GROUPS, RolloutHostActor


class WorkerFailedError(UserError):
    """One worker kept failing past workers.max_restarts."""


@dataclass
class Pending:
    """A host's collection in progress, and when its workers last showed progress."""

    host: int
    rollout_refs: list
    progress: int = -1
    progress_at: float = field(default_factory=time.monotonic)
    probed_at: float = field(default_factory=time.monotonic)
    probe: object = None  # the outstanding progress() call, if any


class RayRuntime:
    def __init__(
        self,
        config: Config,
        probe: Probe,
        address: str | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.probe = probe
        self.log = log
        self.restarts = [0] * config.workers.num_workers
        self.failures_in_a_row = [0] * config.workers.num_workers
        self.said_memory = False  # the advice on a worker killed for memory is given once
        # With workers.overlap, the workers collect the next rollouts during an update, with the
        # policy from before it: the learner accepts rollouts one version behind.
        self.max_policy_lag = 1 if config.workers.overlap else 0
        self._in_flight: tuple | None = None  # (snapshot, pending collections, their lag) started ahead
        self.learner: LearnerGroup | PolicyLearners | None = None
        self.host_workers = worker_hosts(config)  # the worker indices of each host process
        self.hosts: list = []
        self.started_ray = connect(config, address)
        try:
            ensure_fits(config, log, embedded=self.started_ray)
            self.learner = learner_for(config, probe, self.max_policy_lag, log)
            self.hosts = [self._spawn(indices) for indices in self.host_workers]
            self._with_learner(self.learner.wait_ready)
            wait_started(self.hosts, config.workers.sample_timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def poll_s(self) -> float:
        """How long the driver sleeps between looks at the collections: a dead worker's result
        is an error that is ready at once, and is seen within this."""
        return min(1.0, self.config.workers.sample_timeout_s / 4)

    @property
    def probe_every_s(self) -> float:
        """How often a collection is asked for its progress: a quarter of the liveness limit, so
        a stuck worker is replaced within 1.25 x workers.sample_timeout_s, and 64 workers cost
        the driver a few calls a minute, not 64 a second."""
        return self.config.workers.sample_timeout_s / 4

    def _spawn(self, indices: range):
        workers, count = self.config.workers, len(indices)
        return (
            ray.remote(concurrency_groups=LIVENESS_GROUPS)(RolloutHostActor)
            .options(
                num_cpus=workers.num_cpus * count,
                resources={key: value * count for key, value in workers.resources.items()} or None,
                scheduling_strategy=scheduling_strategy("SPREAD"),
                max_restarts=0,
            )
            .remote(self.config, indices, self.probe)
        )

    def start_collecting(self, host: int, snapshot) -> tuple:
        """Host `host`'s workers collect with `snapshot`: (a reference to their infos, one to each rollout)."""
        refs = self.hosts[host].collect_split.options(num_returns=1 + len(self.host_workers[host])).remote(snapshot)
        return refs[0], list(refs[1:])

    def iterate(self) -> IterationStats:
        """One iteration. With `workers.overlap`, the workers collect the next rollout (with the
        snapshot these rollouts used) while the learner updates: one version of policy lag.
        A learner that dies is rebuilt and its part of the iteration retried."""
        timer = PhaseTimer()
        with timer.phase("collect"):
            infos, rollout_refs, lag = self._with_learner(self._collect)
        metrics = self._with_learner(lambda: self._learn(rollout_refs)) | timer.take()
        episodes = EpisodeStats.concat([info.episodes for info in infos])
        timings = [info.timings for info in infos]
        return IterationStats(metrics, episodes, timings, lag, list(self.restarts), self.learner.restarts)

    def _collect(self) -> tuple[list, list, int]:
        if self._in_flight is None:
            snapshot = self.learner.snapshot()
            self._in_flight = (*self._start_collection(snapshot), 0)
            self.learner.wait_for(snapshot)  # (one made before an update is covered by the update's wait)
        snapshot, pending, lag = self._in_flight
        return *self._finish_collection(snapshot, pending), lag

    def _learn(self, rollout_refs: list) -> dict[str, float]:
        if self.max_policy_lag:
            next_snapshot = self.learner.snapshot()  # runs before the update on the actor
            learned = self.learner.start_update(rollout_refs)
            self._in_flight = (*self._start_collection(next_snapshot), 1)
        else:
            learned = self.learner.start_update(rollout_refs)
            self._in_flight = None
        return self.learner.finish_update(learned)

    def _with_learner(self, call: Callable):
        """A call on the learner, retried on a rebuilt learner if it died (a new one that dies
        while starting is rebuilt again, within learner.max_restarts)."""
        return retry_on_loss(call, LearnerLost, self._rebuild_learner)

    def _rebuild_learner(self, reason: str) -> None:
        """Rebuild the learner; a collection started with the dead one's snapshot is dropped."""
        self._in_flight = None
        self.learner.rebuild(reason)

    def _start_collection(self, snapshot) -> tuple:
        pending: dict = {}
        for host in range(len(self.hosts)):
            self._submit(host, snapshot, pending)
        return snapshot, pending

    def _finish_collection(self, snapshot, pending: dict) -> tuple[list, list]:
        """Every worker's (info, rollout ref) for this snapshot, in worker order, replacing failed hosts."""
        infos: list = [None] * len(self.hosts)
        rollout_refs: list = [None] * len(self.hosts)
        while pending:
            # One wait for all of them (it returns when all are done, or after poll_s with those
            # that are): the driver wakes once per iteration, not once per host.
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=self.poll_s)
            for ref, outcome in zip(ready, _get_each(ready)):
                job = pending.pop(ref)
                try:
                    with unwrap_user_errors():
                        infos[job.host] = outcome()
                except ACTOR_LOST as exc:
                    if self.learner.owns(exc):  # the snapshot it was given never came
                        raise LearnerLost(f"{type(exc).__name__}") from None
                    self._replace(job.host, lost_reason(exc))
                    self._say_memory_once(exc)
                    self._submit(job.host, snapshot, pending)
                    continue
                rollout_refs[job.host] = job.rollout_refs
                for slot in self.host_workers[job.host]:
                    self.failures_in_a_row[slot] = 0
            self._check_liveness(snapshot, pending)
        return [info for host in infos for info in host], [ref for host in rollout_refs for ref in host]

    def _check_liveness(self, snapshot, pending: dict) -> None:
        """Replace a host whose workers' env step count has not grown (or that has not answered)
        for workers.sample_timeout_s: a slow env is fine, a stuck one is not."""
        now = time.monotonic()
        timeout_s = self.config.workers.sample_timeout_s
        probes = [job.probe for job in pending.values() if job.probe is not None]
        answered = set(ray.wait(probes, num_returns=len(probes), timeout=0)[0]) if probes else set()
        for ref, job in list(pending.items()):
            if job.probe in answered:
                try:
                    progress = ray.get(job.probe)
                except ACTOR_LOST:
                    progress = job.progress  # the collection's own result reports the death
                job.probe = None
                if progress != job.progress:
                    job.progress, job.progress_at = progress, now
            if now - job.progress_at > timeout_s:
                del pending[ref]
                self._replace(job.host, f"took no env step for workers.sample_timeout_s={timeout_s:g}s")
                self._submit(job.host, snapshot, pending)
            elif job.probe is None and now - job.probed_at >= self.probe_every_s:
                job.probe = self.hosts[job.host].progress.remote()  # only collections that take a while
                job.probed_at = now

    def _submit(self, host: int, snapshot, pending: dict) -> None:
        infos_ref, rollout_refs = self.start_collecting(host, snapshot)
        pending[infos_ref] = Pending(host, rollout_refs)

    def _replace(self, index: int, reason: str) -> None:
        """Replace a host process, with all its workers."""
        indices, limit = self.host_workers[index], self.config.workers.max_restarts
        for slot in indices:
            self.failures_in_a_row[slot] += 1
            self.restarts[slot] += 1
        failures = max(self.failures_in_a_row[slot] for slot in indices)
        kill_quietly(self.hosts[index])
        name, them = host_name(indices), "it" if len(indices) == 1 else "them (one process)"
        if failures > limit:
            raise WorkerFailedError(
                f"{name} {reason}: {failures} failures in a row (workers.max_restarts={limit}); stopping"
            )
        self.log(f"{name} {reason}; replacing {them} (restart {failures}/{limit})")
        self.hosts[index] = self._spawn(indices)
        wait_started([self.hosts[index]], self.config.workers.sample_timeout_s)

    def _say_memory_once(self, exc: BaseException) -> None:
        if isinstance(exc, ray_errors.OutOfMemoryError) and not self.said_memory:
            self.said_memory = True
            self.log(
                "memory ran out on a worker's node: lower workers.envs_per_worker or ppo.rollout_steps (what a "
                "worker holds), or workers.num_workers per node, or give the node more memory"
            )

    def policy_weights(self) -> LearnerState:
        """The learner's state after its newest update, for evaluation: references to what is
        in the object store already, so handing them on costs the learner nothing."""
        return self._with_learner(self.learner.state)

    def state_dict(self) -> dict:
        host_rng = [host.rng_states.remote() for host in self.hosts]
        learner = self._with_learner(self.learner.state_dict)
        worker_rng = [rng for host in ray.get(host_rng) for rng in host]
        return {"learner": learner, "worker_rng": worker_rng, "rng": capture_rng()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's state, also with another number of workers (elastic
        resume): a worker the checkpoint did not have keeps its own fresh RNG."""
        self._in_flight = None
        iteration = state["learner"]["iteration"]
        self._with_learner(lambda: self.learner.load_state_dict(state["learner"]))
        rng = worker_rng_states(state, self.config.workers.num_workers)
        hosts = zip(self.hosts, self.host_workers)
        ray.get([host.resume.remote([rng[slot] for slot in indices], iteration) for host, indices in hosts])
        restore_rng(state["rng"])

    def close(self) -> None:
        if self.learner is not None:
            self.learner.close()
        kill_quietly(*self.hosts)
        if self.started_ray:
            disconnect()


def _get_each(refs: list) -> list[Callable]:
    """The ready objects' values, fetched in one call; where one of them is an error, each is
    fetched on its own, so the caller sees which failed and how. Each comes as a call."""
    try:
        values = ray.get(refs)
    except Exception:
        return [lambda ref=ref: ray.get(ref) for ref in refs]
    return [lambda value=value: value for value in values]
