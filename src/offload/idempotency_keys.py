"""The API's Idempotency-Key: one request, one set of tasks, however often it is retried.

A client that sends `Idempotency-Key: <key>` gets, for 24 h (OFFLOAD_IDEMPOTENCY_TTL_SECONDS):
- the same task ids for a retry with the same key and the same request (method, path, query
  and body), with nothing enqueued a second time;
- a conflict for the same key with a different request, or while the first is still enqueueing.

Task ids are derived from the key (offload.task_ids.new_task_id, seeded with the key), so a
retry returns the same ids before anything is stored. Such ids carry no issue time, so their
tasks are recorded as `queued` when they are enqueued (offload.enqueue). Powertools idempotency
records that the request was enqueued, and the fingerprint of the request (payload validation)
tells a genuine retry from a reused key. Keys are scoped to the caller (the JWT subject under
API Gateway).
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from offload.enqueue import TaskCall, enqueue
from offload.errors import TaskError
from offload.observability import logger
from offload.task_ids import new_task_id
from offload.wiring import Offload

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255


class IdempotencyConflictError(TaskError):
    """The key was used for a different request, or its first request is still running."""


@dataclass(frozen=True)
class IdempotentRequest:
    key: str  # the caller's scope and the header value
    fingerprint: str  # sha256 of method, path, query and body
    owner: str | None = None  # the caller's subject: its tasks' owner

    def task_id(self, index: int) -> UUID:
        """The id of the index-th task of this request: the same on every retry."""
        return new_task_id(self.owner, seed=f"{self.key}\n{index}".encode())


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def _enqueue_once(
    offload: Offload,
    request: dict[str, str],
    calls: Sequence[TaskCall],
    correlation_id: str | None,
    owner: str | None,
) -> dict[str, Any]:
    messages = enqueue(offload, calls, correlation_id=correlation_id, owner=owner)
    return {"task_ids": [str(m.task_id) for m in messages]}


def enqueue_idempotent(
    offload: Offload,
    request: IdempotentRequest,
    calls: Sequence[TaskCall],
    correlation_id: str | None,
    *,
    lambda_context: LambdaContext | None = None,
    owner: str | None = None,
) -> None:
    """Enqueue the calls unless this request was already enqueued under its key.

    With the Lambda context, a request whose function died while enqueueing frees its key at
    the function's timeout, rather than answering 409 until the record expires.
    """
    if not offload.settings.idempotency_table:
        logger.warning("Idempotency-Key ignored: OFFLOAD_IDEMPOTENCY_TABLE is not set")
        enqueue(offload, calls, correlation_id=correlation_id, owner=owner)
        return
    data = {"key": request.key, "fingerprint": request.fingerprint}
    config, guarded = offload.idempotency.once(
        _enqueue_once,
        user="api",
        data_keyword_argument="request",
        key_jmespath="key",
        validation_jmespath="fingerprint",
        key_prefix="offload-api",
    )
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)
    try:
        guarded(offload, request=data, calls=calls, correlation_id=correlation_id, owner=owner)
    except IdempotencyValidationError as exc:
        raise IdempotencyConflictError(
            "this Idempotency-Key was already used for a different request"
        ) from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise IdempotencyConflictError(
            "a request with this Idempotency-Key is still being processed; retry shortly"
        ) from exc
