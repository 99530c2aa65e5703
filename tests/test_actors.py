"""The Ray plumbing every actor kind shares (trainer/runtime/actors.py, workers/actor.py), on a
real local Ray: a constructor's UserError on the first call, lost actors, quiet kills, retries."""

from __future__ import annotations

import time

import pytest
import ray
from ray import exceptions as ray_errors

from trainer.core.errors import UserError
from trainer.runtime.actors import (
    ACTOR_LOST,
    first_line,
    kill_quietly,
    last_line,
    lost_reason,
    retry_on_loss,
    unwrap_user_errors,
    wait_started,
)
from workers.actor import KeepsSetupError

pytestmark = pytest.mark.ray


class Envs:
    def __init__(self, env_id: str) -> None:
        if env_id == "missing":
            raise UserError("no env named 'missing'; register it or give package.module:Class")
        if env_id == "bug":
            raise ValueError("a bug, not the user's")
        self.env_id = env_id


class EnvsActor(KeepsSetupError, Envs):
    def first(self) -> str:
        self.raise_setup_error()
        return self.env_id

    def fail(self, message: str) -> None:
        raise RuntimeError(message)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def spawn(env_id: str = "CartPole-v1"):
    return ray.remote(EnvsActor).options(num_cpus=0, max_restarts=0).remote(env_id)


def test_a_constructors_user_error_comes_out_as_itself_on_the_first_call(local_ray):
    actor = spawn("missing")
    wait_started([actor], timeout_s=60)
    with pytest.raises(UserError) as caught, unwrap_user_errors():
        ray.get(actor.first.remote())
    assert type(caught.value) is UserError
    assert str(caught.value) == "no env named 'missing'; register it or give package.module:Class"
    kill_quietly(actor)


def test_an_actor_built_without_error_answers(local_ray):
    actor = spawn()
    with unwrap_user_errors():
        assert ray.get(actor.first.remote()) == "CartPole-v1"
    kill_quietly(actor)


def test_other_errors_keep_rays_wrapper_and_name_their_own_line(local_ray):
    actor = spawn()
    with pytest.raises(ray_errors.RayTaskError) as caught, unwrap_user_errors():
        ray.get(actor.fail.remote("the env's step blew up"))
    assert last_line(caught.value) == "RuntimeError: the env's step blew up"
    kill_quietly(actor)


def test_a_constructors_other_error_is_a_failed_start(local_ray):
    actor = spawn("bug")
    wait_started([actor], timeout_s=60)  # a failed start is no error here: the first call reports it
    with pytest.raises(ray_errors.RayActorError) as caught:
        ray.get(actor.first.remote())
    assert caught.value.actor_init_failed
    assert last_line(caught.value) == "ValueError: a bug, not the user's"


def test_a_killed_actors_error_counts_as_lost_and_a_second_kill_is_quiet(local_ray):
    actor = spawn()
    wait_started([actor], timeout_s=60)
    call = actor.sleep.remote(60)
    kill_quietly(actor)
    with pytest.raises(ACTOR_LOST) as caught:
        ray.get(call, timeout=60)
    assert lost_reason(caught.value) == f"died ({type(caught.value).__name__})"
    assert first_line(caught.value).startswith(f"{type(caught.value).__name__}: ")
    kill_quietly(actor)
    wait_started([actor], timeout_s=60)  # a dead actor is no error here either


def test_a_call_is_retried_after_each_loss_and_a_lost_recovery_is_recovered_again() -> None:
    class Lost(Exception):
        pass

    outcomes = iter([Lost("rank 0 died"), Lost("rank 1 died"), "done"])
    recoveries: list[str] = []
    failing_recoveries = iter([Lost("the new one died while starting")])

    def call() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def recover(reason: str) -> None:
        recoveries.append(reason)
        failure = next(failing_recoveries, None)
        if failure is not None:
            raise failure

    assert retry_on_loss(call, Lost, recover) == "done"
    assert recoveries == ["rank 0 died", "the new one died while starting", "rank 1 died"]


def test_error_lines() -> None:
    assert first_line(ValueError("first\nsecond")) == "ValueError: first"
    assert first_line(ValueError("")) == "ValueError: "
    assert last_line(ValueError("Traceback:\n  frame\nKeyError: 'x'\n\n")) == "KeyError: 'x'"
    assert last_line(ValueError("")) == "ValueError"
