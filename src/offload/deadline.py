"""The current invocation's deadline, for a call that must not be cut off by the Lambda timeout.

SES SendEmail has no idempotency token: if the Lambda timed out between SES accepting an email
and the task's record saying so, the redelivery would send it again. So the worker records
each invocation's context here, and such a call first checks that its worst case, and the write
that records its effect, fit in the time left. Outside a worker (no context) nothing is checked.
"""

import time
from contextvars import ContextVar
from typing import Protocol

from offload.errors import NotEnoughTimeError


class Invocation(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


_invocation: ContextVar[Invocation | None] = ContextVar("offload_invocation", default=None)


def start(invocation: Invocation) -> None:
    """Remember the invocation that this thread now runs (the worker calls it per invocation)."""
    _invocation.set(invocation)


def seconds_left() -> float | None:
    invocation = _invocation.get()
    return None if invocation is None else invocation.get_remaining_time_in_millis() / 1000


def stop_by(reserve: float) -> float | None:
    """The time.monotonic() by which work must stop to leave `reserve` seconds of the invocation
    (to record its outcome); None outside a worker."""
    left = seconds_left()
    return None if left is None else time.monotonic() + max(0.0, left - reserve)


def require(seconds: float, action: str) -> None:
    """Raise NotEnoughTimeError (transient: the queue retries) unless `seconds` are left."""
    left = seconds_left()
    if left is not None and left < seconds:
        raise NotEnoughTimeError(
            f"{action} not attempted: {left:.1f} s of the invocation left, it needs {seconds:g} s"
        )
