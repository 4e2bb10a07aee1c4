"""Durable BackgroundTasks for FastAPI: change the import, keep the code.

    from offload.fastapi import BackgroundTasks

    @app.post("/send-notification/{email}")
    async def send_notification(email: str, background_tasks: BackgroundTasks):
        background_tasks.add_task(write_log, f"Notification sent to {email}")

add_task accepts only functions decorated with @offload.task and validates their arguments at
once. The tasks are sent to SQS in one batch when the endpoint returns, before the response goes
out, so a 2xx means the work is durable. If SQS refuses them the client gets a 503 instead.
"""

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from uuid import UUID

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, HTTPException, Request, status
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offload.enqueue import TaskCall, enqueue
from offload.idempotency_keys import HEADER as IDEMPOTENCY_HEADER
from offload.idempotency_keys import (
    MAX_KEY_LENGTH,
    IdempotencyConflictError,
    IdempotentRequest,
    enqueue_idempotent,
    fingerprint,
)
from offload.registry import definition_of

CORRELATION_HEADER = "x-correlation-id"

# Enqueueing waits on SQS and DynamoDB. It runs under its own thread limit, so a burst of POSTs
# never holds the tokens FastAPI needs to run plain `def` endpoints and dependencies.
ENQUEUE_THREADS = 40
_enqueue_limiter: RunVar[CapacityLimiter] = RunVar("offload_enqueue_limiter")


def _limiter() -> CapacityLimiter:
    """One limiter per event loop (Mangum may start a new loop per invocation)."""
    try:
        return _enqueue_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(ENQUEUE_THREADS)
        _enqueue_limiter.set(limiter)
        return limiter


class DurableBackgroundTasks:
    """Collects task calls during a request; they are enqueued when the endpoint returns."""

    def __init__(
        self,
        correlation_id: str | None = None,
        idempotent: IdempotentRequest | None = None,
        lambda_context: Any = None,
    ) -> None:
        self.correlation_id = correlation_id
        self.idempotent = idempotent
        self.lambda_context = lambda_context  # under Mangum, the invocation's context
        self._calls: list[TaskCall] = []
        self._added = 0

    def add_task(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> UUID:
        """Validate a call to a registered task and queue it; returns the task id."""
        definition = definition_of(func)
        payload = definition.payload(*args, **kwargs)
        if self.idempotent is not None:
            call = TaskCall(definition, payload, self.idempotent.task_id(self._added))
        else:
            call = TaskCall(definition, payload)
        self._added += 1
        self._calls.append(call)
        return call.task_id

    @property
    def pending(self) -> list[TaskCall]:
        return list(self._calls)

    def flush(self) -> None:
        calls, self._calls = self._calls, []
        if not calls:
            return
        if self.idempotent is not None:
            enqueue_idempotent(self.idempotent, calls, self.correlation_id, self.lambda_context)
        else:
            enqueue(calls, correlation_id=self.correlation_id)


def correlation_id(request: Request) -> str | None:
    """The caller's correlation id, else API Gateway's request id (under Mangum)."""
    header = request.headers.get(CORRELATION_HEADER)
    if header:
        return header[:128]
    event = request.scope.get("aws.event") or {}
    request_id = (event.get("requestContext") or {}).get("requestId")
    return str(request_id) if request_id else None


class CorrelationIdHeader:
    """ASGI middleware: every response carries the request's correlation id (X-Correlation-Id),
    the one its tasks' messages and worker log lines carry."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = correlation_id(Request(scope))

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start" and value:
                MutableHeaders(scope=message).setdefault(CORRELATION_HEADER, value)
            await send(message)

        await self.app(scope, receive, send_with_header)


def _caller(request: Request) -> str:
    """Who an Idempotency-Key belongs to: the JWT subject under API Gateway."""
    event = request.scope.get("aws.event") or {}
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    return str(claims.get("sub") or "anonymous")


async def idempotent_request(request: Request) -> IdempotentRequest | None:
    """The request's Idempotency-Key, scoped to its caller, with the request's fingerprint."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
        )
    body = await request.body()
    digest = fingerprint(request.method, request.url.path, request.url.query, body)
    return IdempotentRequest(key=f"{_caller(request)}\n{key}", fingerprint=digest)


async def durable_background_tasks(request: Request) -> AsyncIterator[DurableBackgroundTasks]:
    tasks = DurableBackgroundTasks(
        correlation_id(request),
        await idempotent_request(request),
        request.scope.get("aws.context"),
    )
    yield tasks
    if tasks.pending:
        try:
            await to_thread.run_sync(tasks.flush, limiter=_limiter())
        except IdempotencyConflictError as exc:
            # Same key, different request (or the first still running): documented as 409.
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc


BackgroundTasks = Annotated[
    DurableBackgroundTasks, Depends(durable_background_tasks, scope="function")
]
