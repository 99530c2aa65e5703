"""What Ray makes every actor kind need, in one place: telling a lost actor from a failed call,
a UserError raised in an actor re-raised as itself, kill and start-up waits that never fail, and
a call retried on a rebuilt actor. A fault policy changes here."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import ray
from ray import exceptions as ray_errors

from trainer.core.errors import UserError

T = TypeVar("T")

ACTOR_LOST = (
    ray_errors.RayActorError,
    ray_errors.WorkerCrashedError,
    ray_errors.ObjectLostError,
    ray_errors.OutOfMemoryError,  # Ray's memory monitor killed the actor's process
    ray_errors.NodeDiedError,
)
OUT_OF_MEMORY = re.compile(r"was ([\d.]+GB) used / ([\d.]+GB) limit.*?threshold of \d+B \(([\d.]+%)", re.S)


def lost_reason(exc: BaseException) -> str:
    """Why an actor is gone, in a few words: `died (ActorDiedError)`, or the memory figures when
    Ray's out-of-memory killer took it."""
    if isinstance(exc, ray_errors.OutOfMemoryError):
        found = OUT_OF_MEMORY.search(str(exc))
        figures = f" (its node used {found[1]} of {found[2]}, over the {found[3]} Ray kills at)" if found else ""
        return f"was killed by Ray's out-of-memory killer{figures}"
    return f"died ({type(exc).__name__})"


@contextmanager
def unwrap_user_errors() -> Iterator[None]:
    """Around a ray.get: a UserError raised inside an actor comes out as itself, minus Ray's
    wrapper (and its traceback text); any other error as it is."""
    try:
        yield
    except ray_errors.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise


def kill_quietly(*actors) -> None:
    """Stop actors for good; one already dead (or a Ray already gone) is no error."""
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:
            pass


def wait_started(actors: list, timeout_s: float) -> None:
    """Wait (up to `timeout_s`) for actors' processes to start: a new process importing torch and
    building envs is not its first call, and must not count against that call's deadline. One that
    does not start, or dies, is left to the first call's own deadline and failure handling."""
    try:
        ray.get([actor.__ray_ready__.remote() for actor in actors], timeout=timeout_s)
    except (ray_errors.GetTimeoutError, *ACTOR_LOST):
        pass


def retry_on_loss(call: Callable[[], T], lost: type[Exception], recover: Callable[[str], object]) -> T:
    """Run `call` until it returns. Each time an actor it uses is lost (it raises `lost`), run
    `recover` with the reason (rebuild the actor) and call again; a recovery that is lost itself
    (the new actor died while starting) is run again the same way. `recover` bounds it all: it
    raises once its restarts are used up."""
    reason = None
    while True:
        try:
            if reason is not None:
                recover(reason)
            return call()
        except lost as exc:
            reason = str(exc)


def first_line(exc: BaseException) -> str:
    """An error in a few words: its type and its message's first line."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:200]


def last_line(exc: BaseException) -> str:
    """The raised exception's own line, from the end of Ray's traceback text."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
