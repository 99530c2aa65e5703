"""The learner actor, and what the driver keeps to rebuild it.

Every update returns the learner's new state as a second object, which the driver holds by
reference: it lives in the object store, outside the learner's process, and a copy is pulled to
the driver's node. A learner that dies is rebuilt from that state and the iteration is retried
with the same rollouts: the run loses no step. Only when that state is gone too does the run stop
(the session then names the newest checkpoint to resume from).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from contextlib import suppress

import ray
from ray import exceptions as ray_errors
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from trainer.core.agents import AgentsProbe
from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.messages import PolicySnapshot, Rollout
from trainer.core.process import set_up_process
from trainer.learning.learner import Learner
from trainer.learning.multi_learner import MultiLearner
from trainer.runtime.actors import ACTOR_LOST, first_line, kill_quietly, last_line, lost_reason, unwrap_user_errors
from trainer.runtime.placement import scheduling_strategy
from trainer.runtime.stats import LearnerState
from workers.actor import KeepsSetupError
from workers.ray_worker import LIVENESS_GROUPS

START_TIMEOUT_S = 300.0


class LearnerFailedError(UserError):
    """The learner could not start, or died more often than learner.max_restarts allows."""


class LearnerLost(Exception):
    """The learner actor died during a call; the runtime rebuilds it and retries."""


class OnRay:
    """Mixin: the learner in its own process (on a GPU node when it asks for one), for either
    kind of learner below it. A UserError while building it (say, learner.device: cuda on a CPU
    node) is kept and raised by `ready()`."""

    def __init__(self, config: Config, *args) -> None:
        set_up_process(config, "learner")
        super().__init__(config, *args)

    def ready(self) -> None:
        self.raise_setup_error()

    @ray.method(enable_task_events=False)  # per-iteration calls: see RolloutHostActor.collect_split
    def snapshot(self) -> PolicySnapshot:
        return super().snapshot()

    @ray.method(num_returns=3, enable_task_events=False)
    def update_shard(
        self, submitted_at: float, *rollouts: Rollout
    ) -> tuple[dict[str, float], dict | None, dict | None]:
        """Update from this rank's rollouts; return the metrics and the new state, as its weights
        and its optimizer's (rank 0 only: every rank holds the same). The rollouts come as the
        call's own arguments, which Ray resolves before it runs: small ones travel inside the call,
        large ones are pulled into this node's object store at once, with no round trip per rollout. `submitted_at`: the
        driver's clock at the call, so the transfer is timed (across nodes, as well as their
        clocks agree)."""
        self.timer.add("transfer", max(0.0, time.time() - submitted_at))
        metrics = self.update(list(rollouts))
        if self.rank:
            return metrics, None, None
        return metrics, self.weights_state(), self.optimizer_state()

    @ray.method(concurrency_group="liveness", enable_task_events=False)
    def alive(self) -> bool:
        """Answers on a thread of its own, also while an update runs: a learner that does not
        answer is stopped or hung, however long its updates take."""
        return True

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the others: this node's address and a free port."""
        with socket.socket() as probe:
            probe.bind(("", 0))
            return ray.util.get_node_ip_address(), probe.getsockname()[1]


class LearnerGroup:
    """The driver's handle on the learner: one actor, or `learner.num_learners` data-parallel
    ranks placed through a placement group and joined in one torch.distributed group, behind the
    same calls. A rank's death (or a collective that fails because of it) becomes LearnerLost,
    and `rebuild()` starts a new learner (group) from the newest state."""

    def __init__(self, config: Config, probe: Probe, max_policy_lag: int, log: Callable[[str], None]) -> None:
        self.config, self.probe, self.log = config, probe, log
        self.max_policy_lag = max_policy_lag
        self.restarts = 0
        self.newest: LearnerState | None = None  # the state after the newest update, in the object store
        self.loaded_state: dict | None = None  # a resumed run's state, until the first update
        self.placement = None
        self.actors = self._spawn()

    @property
    def actor(self):
        """Rank 0: the one that publishes snapshots and state."""
        return self.actors[0]

    @property
    def world(self) -> int:
        return self.config.learner.num_learners

    def _spawn(self) -> list:
        learner = self.config.learner
        options = {"num_cpus": learner.num_cpus, "num_gpus": learner.num_gpus, "max_restarts": 0}
        args = (self.config, self.probe)
        trial = scheduling_strategy()  # a sweep's trial holds the learner's bundles in its placement group
        learner_class = MultiLearnerActor if isinstance(self.probe, AgentsProbe) else LearnerActor
        actor_class = ray.remote(concurrency_groups=LIVENESS_GROUPS)(learner_class)
        if self.world == 1:
            return [actor_class.options(**options, scheduling_strategy=trial).remote(*args, 0, 1, self.max_policy_lag)]
        if trial is None:  # the ranks get a placement group of their own
            bundle = {"CPU": learner.num_cpus, **({"GPU": learner.num_gpus} if learner.num_gpus else {})}
            self.placement = placement_group([bundle] * self.world, strategy=learner.placement.upper())
        return [
            actor_class.options(
                **options, scheduling_strategy=trial or PlacementGroupSchedulingStrategy(self.placement, rank)
            ).remote(*args, rank, self.world, self.max_policy_lag)
            for rank in range(self.world)
        ]

    def wait_ready(self) -> None:
        """Wait for the learner (every rank) to be built and, with several, to join one process
        group (the cluster was checked to have room, so this is processes starting, or other jobs'
        actors making way); a failure is reported as the learner's, in one line."""
        timeout_s = max(self.config.workers.sample_timeout_s, START_TIMEOUT_S)
        try:
            with unwrap_user_errors():
                ray.get([actor.ready.remote() for actor in self.actors], timeout=timeout_s)
                if self.world > 1:
                    address, port = ray.get(self.actor.address.remote(), timeout=timeout_s)
                    ray.get([actor.join.remote(address, port) for actor in self.actors], timeout=timeout_s)
        except ray_errors.RayTaskError as exc:
            raise LearnerFailedError(f"the learner failed at start-up: {last_line(exc)}") from None
        except ray_errors.GetTimeoutError:
            raise LearnerFailedError(
                f"the learner did not start within {timeout_s:g}s; see `ray status` for what it waits on"
            ) from None
        except ACTOR_LOST as exc:
            if isinstance(exc, ray_errors.RayActorError) and exc.actor_init_failed:
                raise LearnerFailedError(f"the learner failed at start-up: {last_line(exc)}") from None
            raise LearnerLost(first_line(exc)) from None  # its process died while starting: rebuild it

    def owns(self, exc: BaseException) -> bool:
        """Whether a failed call's error is a learner rank's death (also when it reached a
        worker through the snapshot it was given)."""
        ids = {actor._actor_id.hex() for actor in self.actors}
        return isinstance(exc, ray_errors.RayActorError) and exc.actor_id in ids

    def get(self, ref, rank: int = 0):
        try:
            self._wait_alive(ref)
            return ray.get(ref)
        except ACTOR_LOST as exc:
            where = f"rank {rank}: " if self.world > 1 else ""
            raise LearnerLost(
                where + (lost_reason(exc) if isinstance(exc, ray_errors.OutOfMemoryError) else first_line(exc))
            ) from None
        except ray_errors.RayTaskError as exc:
            if isinstance(exc.cause, UserError):
                raise exc.cause from None  # the learner's own word on what is wrong, minus Ray's wrapper
            if self.world == 1:
                raise
            # A rank's collective failed (timed out, or a peer is gone): the group is broken.
            raise LearnerLost(f"rank {rank}'s collective failed: {_collective_error(exc)}") from None

    def _wait_alive(self, ref) -> None:
        """Wait for a call's result while every rank keeps answering liveness probes (every
        quarter of learner.liveness_timeout_s). A rank that leaves a probe unanswered for the
        whole limit (a stopped process, a deadlock) is killed, so the learner is rebuilt as if
        it had died, where ray.get would wait forever."""
        limit = self.config.learner.liveness_timeout_s
        probes: list = []
        probed_at = answered_at = time.monotonic()
        while not ray.wait([ref], timeout=min(1.0, limit / 4), fetch_local=False)[0]:
            now = time.monotonic()
            if probes:
                done, _ = ray.wait(probes, num_returns=len(probes), timeout=0, fetch_local=False)
                if len(done) == len(probes):
                    probes, answered_at = [], now
                elif now - probed_at > limit:
                    silent = [rank for rank, probe in enumerate(probes) if probe not in done]
                    self.kill()
                    raise LearnerLost(
                        f"rank {silent[0]} answered no liveness probe for learner.liveness_timeout_s={limit:g}s "
                        "(stopped or hung)"
                    )
            elif now - answered_at >= limit / 4:
                probes, probed_at = [actor.alive.remote() for actor in self.actors], now

    def snapshot(self):
        return self.actor.snapshot.remote()

    def wait_for(self, ref) -> None:
        """Wait until a call's result exists (not fetched), the learner's liveness watched: workers
        handed a snapshot that never comes would wait on it, and be taken for stuck instead."""
        self._wait_alive(ref)

    def start_update(self, rollout_refs: list) -> list:
        """Each rank gets the rollouts of its own workers, as the arguments of its call."""
        share = len(rollout_refs) // self.world
        now = time.time()
        return [
            actor.update_shard.remote(now, *rollout_refs[rank * share : (rank + 1) * share])
            for rank, actor in enumerate(self.actors)
        ]

    def finish_update(self, refs: list) -> dict[str, float]:
        results, lost = [], None
        for rank, (metrics_ref, *state_refs) in enumerate(refs):  # every rank must finish; each failure is read
            try:
                results.append(self.get(metrics_ref, rank))
            except LearnerLost as exc:
                lost = lost or exc
                with suppress(Exception):
                    ray.get(state_refs)
        if lost is not None:
            raise lost
        self.newest, self.loaded_state = LearnerState(*refs[0][1:]), None
        # The weights get a second copy on the driver's node (they survive the learner's node); the
        # optimizer's state stays in the learner node's object store until a checkpoint reads it.
        ray.wait([self.newest.weights], timeout=0, fetch_local=True)
        return results[0]

    def state(self) -> LearnerState:
        """The newest state, for evaluation: after an update it is in the object store already."""
        if self.newest is not None:
            return self.newest
        full = self.state_dict()
        return LearnerState(ray.put({k: v for k, v in full.items() if k != "optimizer"}), ray.put(full["optimizer"]))

    def state_dict(self) -> dict:
        if self.newest is not None:
            weights, optimizer = self.get(self.newest.weights), self.get(self.newest.optimizer)
            return {**weights, "optimizer": optimizer}
        if self.loaded_state is not None:
            return self.loaded_state
        return self.get(self.actor.state_dict.remote())

    def load_state_dict(self, state: dict) -> None:
        self.newest, self.loaded_state = None, state  # first: a learner that dies loading it is rebuilt with it
        state_ref = ray.put(state)
        for ref in [actor.load_state_dict.remote(state_ref) for actor in self.actors]:
            self.get(ref)

    def rebuild(self, reason: str) -> None:
        """Replace a dead learner (every rank of it) by a new one holding the newest state; stop
        past the limit."""
        self.restarts += 1
        limit = self.config.learner.max_restarts
        if self.restarts > limit:
            raise LearnerFailedError(
                f"the learner died ({reason}) with its learner.max_restarts={limit} rebuilds used up"
            )
        self.respawn(lambda source: f"the learner died ({reason}); rebuilding it from {source} "
                     f"(restart {self.restarts}/{limit})")  # fmt: skip

    def respawn(self, saying: Callable[[str], str]) -> None:
        """Stop every rank and start new ones holding the newest state; logs `saying(where that
        state comes from)` first."""
        state, source = self._newest_state()
        self.log(saying(source))
        self.kill()
        self.actors = self._spawn()
        self.wait_ready()
        if state is not None:
            self.load_state_dict(state)

    def _newest_state(self) -> tuple[dict | None, str]:
        if self.newest is not None:
            lost = (ray_errors.ObjectLostError, ray_errors.GetTimeoutError, ray_errors.RayActorError)
            try:
                weights = ray.get(self.newest.weights, timeout=60)
            except lost:
                raise LearnerFailedError(
                    "the learner died and its newest state was lost with it (its node is gone)"
                ) from None
            try:
                return {**weights, "optimizer": ray.get(self.newest.optimizer, timeout=60)}, (
                    "its state after the last update"
                )
            except lost:  # it lived on the learner's node, now gone: Adam's moments start again
                return weights, "its weights after the last update (its optimizer's state was lost with its node)"
        if self.loaded_state is not None:
            return self.loaded_state, "the state it was resumed with"
        return None, "scratch (no update had finished)"

    def close(self) -> None:
        """The run's end: ranks leave their process group (a slow or dead one is not waited for
        past a few seconds), then stop."""
        if self.world > 1:
            with suppress(Exception):
                ray.wait([actor.close.remote() for actor in self.actors], num_returns=self.world, timeout=10)
        self.kill()

    def kill(self) -> None:
        """Stop every rank (and free their placement group)."""
        kill_quietly(*self.actors)
        if self.placement is not None:
            with suppress(Exception):
                remove_placement_group(self.placement)
            self.placement = None


class LearnerActor(KeepsSetupError, OnRay, Learner):
    pass


class MultiLearnerActor(KeepsSetupError, OnRay, MultiLearner):
    """The policies' learners of a multi-agent run in one actor: one process, one call per iteration."""


def _collective_error(exc: BaseException) -> str:
    """gloo's or NCCL's own words, without their source path and advice: `Connection closed by
    peer [10.0.0.2]:29500`."""
    line = re.sub(r"^\w+: \[[^\]]*\] ", "", last_line(exc))
    return line.split(". ")[0][:200]
