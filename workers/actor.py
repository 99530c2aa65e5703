"""The constructor side of an actor class: a UserError while building it kept for its first call."""

from __future__ import annotations

from trainer.core.errors import UserError


class KeepsSetupError:
    """Mixin, first among an actor class's bases. A UserError while building the actor (an env
    that cannot be made, a device its node lacks) is the user's error, not a dead actor: it is
    kept, and `raise_setup_error()` raises it from the first call, so the run stops with it
    instead of replacing the actor."""

    def __init__(self, *args, **kwargs) -> None:
        self.setup_error: UserError | None = None
        try:
            super().__init__(*args, **kwargs)
        except UserError as exc:
            self.setup_error = exc

    def raise_setup_error(self) -> None:
        if self.setup_error is not None:
            raise self.setup_error
