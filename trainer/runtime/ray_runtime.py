"""The Ray runtime: rollout-worker actors and a learner actor, with worker fault handling.

Per iteration the learner returns ONE snapshot object that every worker reads from the object
store. Each worker returns two objects: a small RolloutInfo the driver waits on, and the rollout
itself, whose reference the driver hands to the learner, which fetches it from the object store.
A worker that dies or misses `workers.sample_timeout_s` is replaced and its share collected
again with the same snapshot, so an iteration never mixes versions or half rollouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
from ray import exceptions as ray_errors

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.messages import EpisodeStats
from trainer.learning.learner import Learner
from trainer.runtime.checkpoint import capture_rng, restore_rng
from trainer.runtime.ray_connect import connect, disconnect
from trainer.runtime.stats import IterationStats
from workers.ray_worker import RolloutWorkerActor

WORKER_LOST = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.ObjectLostError)


class WorkerFailedError(UserError):
    """One worker kept failing past workers.max_restarts."""


class LearnerActor(Learner):
    """The learner in its own process (on a GPU node when it asks for one)."""

    def learn_from_refs(self, rollout_refs: list) -> dict[str, float]:
        start = time.perf_counter()
        rollouts = ray.get(rollout_refs)
        transfer_time = time.perf_counter() - start
        metrics = self.learn(rollouts)
        metrics["transfer_time_s"] = transfer_time
        return metrics


class RayRuntime:
    def __init__(
        self,
        config: Config,
        probe: Probe,
        address: str | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.registry_spec = probe.registry_spec
        self.log = log
        self.started_ray = connect(config, address)
        learner = config.learner
        self.learner = (
            ray.remote(LearnerActor)
            .options(num_cpus=learner.num_cpus, num_gpus=learner.num_gpus)
            .remote(config, probe.observation_space, probe.action_space)
        )
        self.workers = [self._spawn(index) for index in range(config.workers.num_workers)]
        self._wait_started([self.learner, *self.workers])
        self.restarts = [0] * config.workers.num_workers
        self.failures_in_a_row = [0] * config.workers.num_workers
        self._in_flight: tuple | None = None  # (snapshot, pending collections) started ahead

    def _spawn(self, index: int):
        workers = self.config.workers
        return (
            ray.remote(RolloutWorkerActor)
            .options(
                num_cpus=workers.num_cpus,
                resources=dict(workers.resources) or None,
                scheduling_strategy="SPREAD",
                max_restarts=0,
            )
            .remote(self.config, index, self.registry_spec)
        )

    def _wait_started(self, actors: list) -> None:
        """Wait (up to workers.sample_timeout_s) for actors to start: a new process importing
        torch and building envs is no collection, and must not count against its deadline."""
        try:
            ray.get([actor.__ray_ready__.remote() for actor in actors], timeout=self.config.workers.sample_timeout_s)
        except (ray_errors.GetTimeoutError, *WORKER_LOST):
            pass  # the collection's own deadline and failure handling take it from here

    def iterate(self) -> IterationStats:
        """One iteration. With `workers.overlap`, the workers collect the next rollout (with the
        snapshot these rollouts used) while the learner updates: one version of policy lag."""
        restarts_before = sum(self.restarts)
        start = time.perf_counter()
        if self._in_flight is None:
            self._in_flight = self._start_collection(self.learner.snapshot.remote())
        snapshot, pending = self._in_flight
        infos, rollout_refs = self._finish_collection(snapshot, pending)
        collect_time = time.perf_counter() - start
        if self.config.workers.overlap:
            next_snapshot = self.learner.snapshot.remote()  # runs before the update on the actor
            learned = self.learner.learn_from_refs.remote(rollout_refs)
            self._in_flight = self._start_collection(next_snapshot)
        else:
            learned = self.learner.learn_from_refs.remote(rollout_refs)
            self._in_flight = None
        metrics = _unwrap(lambda: ray.get(learned))
        metrics["collect_time_s"] = collect_time
        episodes = EpisodeStats.concat([info.episodes for info in infos])
        return IterationStats(metrics, episodes, [info.timings for info in infos], sum(self.restarts) - restarts_before)

    def _start_collection(self, snapshot) -> tuple:
        pending: dict = {}
        for slot in range(len(self.workers)):
            self._submit(slot, snapshot, pending)
        return snapshot, pending

    def _finish_collection(self, snapshot, pending: dict) -> tuple[list, list]:
        """Every worker's (info, rollout ref) for this snapshot, replacing failed workers."""
        count = len(self.workers)
        infos: list = [None] * count
        rollout_refs: list = [None] * count
        while pending:
            next_deadline = min(deadline for _, _, deadline in pending.values())
            timeout = max(0.0, next_deadline - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            for ref in ready:
                slot, rollout_ref, _ = pending.pop(ref)
                try:
                    infos[slot] = _unwrap(lambda ref=ref: ray.get(ref))
                except WORKER_LOST as exc:
                    self._replace(slot, f"died ({type(exc).__name__})")
                    self._submit(slot, snapshot, pending)
                    continue
                rollout_refs[slot] = rollout_ref
                self.failures_in_a_row[slot] = 0
            now = time.monotonic()
            for ref, (slot, _, deadline) in list(pending.items()):
                if now >= deadline:
                    del pending[ref]
                    timeout_s = self.config.workers.sample_timeout_s
                    self._replace(slot, f"sent no rollout within workers.sample_timeout_s={timeout_s:g}s")
                    self._submit(slot, snapshot, pending)
        return infos, rollout_refs

    def _submit(self, slot: int, snapshot, pending: dict) -> None:
        info_ref, rollout_ref = self.workers[slot].collect_split.remote(snapshot)
        pending[info_ref] = (slot, rollout_ref, time.monotonic() + self.config.workers.sample_timeout_s)

    def _replace(self, slot: int, reason: str) -> None:
        self.failures_in_a_row[slot] += 1
        self.restarts[slot] += 1
        limit = self.config.workers.max_restarts
        ray.kill(self.workers[slot], no_restart=True)
        if self.failures_in_a_row[slot] > limit:
            raise WorkerFailedError(
                f"rollout worker {slot} {reason}, its {self.failures_in_a_row[slot]}th failure in a row "
                f"(workers.max_restarts={limit}); stopping"
            )
        self.log(f"rollout worker {slot} {reason}; replacing it (restart {self.failures_in_a_row[slot]}/{limit})")
        self.workers[slot] = self._spawn(slot)
        self._wait_started([self.workers[slot]])

    def state_dict(self) -> dict:
        learner = self.learner.state_dict.remote()
        worker_rng = [worker.rng_state.remote() for worker in self.workers]
        return {"learner": ray.get(learner), "worker_rng": ray.get(worker_rng), "rng": capture_rng()}

    def load_state_dict(self, state: dict) -> None:
        self._in_flight = None
        iteration = state["learner"]["iteration"]
        pending = [self.learner.load_state_dict.remote(state["learner"])]
        pending += [worker.resume.remote(rng, iteration) for worker, rng in zip(self.workers, state["worker_rng"])]
        ray.get(pending)
        restore_rng(state["rng"])

    def close(self) -> None:
        for actor in [*self.workers, self.learner]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if self.started_ray:
            disconnect()


def _unwrap(call: Callable):
    """Run a ray.get; a UserError raised inside an actor comes out as itself, minus Ray's wrapper."""
    try:
        return call()
    except ray_errors.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise cause from None
        raise
