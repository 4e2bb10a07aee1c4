"""Atomic DynamoDB requests in moto, as DynamoDB makes them.

DynamoDB applies each request atomically: of two conditional writes racing for one key, one
fails. moto reads the item, evaluates the condition, then writes, with no lock, so two threads
(the threads of moto's server, or in-process callers) can both pass `attribute_not_exists`.
Two workers then both claim a task's record and both send its email. Running
moto's DynamoDB requests one at a time restores the guarantee the workers rely on.
"""

import threading
from collections.abc import Callable
from functools import wraps
from typing import Any

from moto.dynamodb.responses import DynamoHandler

_LOCK = threading.RLock()
_MARK = "_offload_serialized"


def serialize_dynamodb_requests() -> None:
    """Make every DynamoDB request moto serves atomic (idempotent; for the whole process)."""
    original: Callable[[DynamoHandler], Any] = DynamoHandler.call_action
    if getattr(original, _MARK, False):
        return

    @wraps(original)
    def call_action(self: DynamoHandler) -> Any:
        with _LOCK:
            return original(self)

    setattr(call_action, _MARK, True)
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
