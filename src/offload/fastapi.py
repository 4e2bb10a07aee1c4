"""Durable BackgroundTasks for FastAPI: change the import, keep the code.

    from offload.fastapi import BackgroundTasks

    @app.post("/send-notification/{email}")
    async def send_notification(email: str, background_tasks: BackgroundTasks):
        background_tasks.add_task(write_log, f"Notification sent to {email}")

add_task takes what FastAPI's does: a plain function defined at the top level of a module (the
message names it "module:function", and a worker imports it only if OFFLOAD_TASK_MODULES allows
its module), or a @offload.task function. It validates the arguments from the function's type
hints at once. The tasks are sent to SQS in one batch when the endpoint returns, before the
response goes out, so a 2xx means the work is durable. If SQS refuses them the client gets a
503 instead. A call that could not be sent (a lambda, a closure, a bound method, a module not
in OFFLOAD_TASK_MODULES, an argument that is not JSON data) is a NotSendableError, a TypeError,
at add_task.

With no queue URL configured and not on Lambda (plain uvicorn), the tasks run in-process after
the response instead, NOT durably, and the logs say so (offload.in_process); there, calls that
could not be sent run too, as FastAPI's would. On Lambda that is a 503. Each task records its
caller (the JWT `sub`) as its owner; see caller_subject.
"""

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Annotated, Any
from uuid import UUID

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import BackgroundTasks as InProcessTasks
from fastapi import Depends, HTTPException, Request, status
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offload import in_process
from offload.enqueue import TaskCall, enqueue
from offload.idempotency_keys import HEADER as IDEMPOTENCY_HEADER
from offload.idempotency_keys import (
    MAX_KEY_LENGTH,
    IdempotencyConflictError,
    IdempotentRequest,
    enqueue_idempotent,
    fingerprint,
)
from offload.models import utcnow
from offload.registry import (
    NotSendableError,
    check_importable,
    definition_of,
    name_of,
    queue_of,
)
from offload.scheduling import When, run_at_of
from offload.task_ids import new_task_id
from offload.wiring import Offload, build

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


_COMPOSING = threading.Lock()


async def get_offload(request: Request) -> Offload:
    """The app's Offload (settings, clients): composed at the app's first request, then kept on
    `app.state.offload`. Tests override it: `app.dependency_overrides[get_offload] = ...`.

    A coroutine, so that FastAPI calls it on the event loop: a plain function would cost each
    request a thread-pool hop, and under Mangum a new thread (see durable_background_tasks)."""
    state = request.app.state
    offload: Offload | None = getattr(state, "offload", None)
    if offload is None:
        with _COMPOSING:  # concurrent first requests share one
            offload = getattr(state, "offload", None)
            if offload is None:
                offload = state.offload = build()
    return offload


OffloadDep = Annotated[Offload, Depends(get_offload)]


class DurableBackgroundTasks:
    """Collects task calls during a request; they are enqueued when the endpoint returns."""

    def __init__(
        self,
        offload: Offload,
        correlation_id: str | None = None,
        idempotent: IdempotentRequest | None = None,
        lambda_context: Any = None,
        *,
        owner: str | None = None,
        in_process_tasks: InProcessTasks | None = None,
    ) -> None:
        self.offload = offload
        self.correlation_id = correlation_id
        self.idempotent = idempotent
        self.lambda_context = lambda_context  # under Mangum, the invocation's context
        self.owner = owner  # the caller's subject, stored on each task
        # The request's own BackgroundTasks: the in-process fallback runs tasks after the response.
        self.in_process_tasks = in_process_tasks
        self._calls: list[TaskCall | in_process.LocalCall] = []
        self._added = 0

    def add_task(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> UUID:
        """Validate a call and keep it for the queue (or to run in-process); returns the task id.

        Raises NotSendableError (a TypeError) for a call a worker could not run, unless the
        task's queue is not configured and it will run in this process.
        """
        idempotent = self.idempotent
        if idempotent is not None:
            task_id = idempotent.task_id(self._added)
        else:
            task_id = new_task_id(self.owner)
        queue = queue_of(func)
        settings = self.offload.settings
        queued = not in_process.runs_here(queue, settings)
        try:
            definition = definition_of(func)
            if queued:
                check_importable(definition, settings.task_modules)
            call: TaskCall | in_process.LocalCall = TaskCall(
                definition, definition.payload(*args, **kwargs), task_id
            )
        except NotSendableError as exc:
            if queued:
                raise
            call = in_process.LocalCall(name_of(func), queue, func, args, kwargs, str(exc), task_id)
        self._added += 1
        self._calls.append(call)
        return call.task_id

    def add_task_later(
        self, when: When, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> UUID:
        """add_task, to run at `when`: a delay (timedelta) or an aware datetime.

            background_tasks.add_task_later(timedelta(hours=2), send_email, to=..., subject=...)
            background_tasks.add_task_later(send_at, write_log, "reminder")

        `when` comes first and is positional-only, so it never takes the place of a task's own
        argument (a task may have a parameter called `delay` or `when`). A time in the past, or
        a delay of zero or less, runs now; more than a year ahead is a TooFarAheadError (a
        ValueError), a naive datetime a ValueError. The task is `scheduled` until it runs: up to
        15 minutes its message waits in the queue, beyond that a one-time EventBridge Scheduler
        schedule sends it (see offload.scheduling).
        """
        run_at = run_at_of(when, utcnow())
        task_id = self.add_task(func, *args, **kwargs)
        self._calls[-1] = replace(self._calls[-1], run_at=run_at)
        return task_id

    @property
    def pending(self) -> list[TaskCall | in_process.LocalCall]:
        return list(self._calls)

    def flush(self) -> None:
        calls, self._calls = self._calls, []
        if not calls:
            return
        offload = self.offload
        local = in_process.unqueued(
            calls, offload.settings
        )  # raises QueueNotConfiguredError on Lambda
        if local and self.in_process_tasks is None:
            raise in_process.QueueNotConfiguredError("no queue URL is set and no request to run in")
        local_ids = {call.task_id for call in local}
        queued = [c for c in calls if isinstance(c, TaskCall) and c.task_id not in local_ids]
        if queued and self.idempotent is not None:
            enqueue_idempotent(
                offload,
                self.idempotent,
                queued,
                self.correlation_id,
                lambda_context=self.lambda_context,
                owner=self.owner,
            )
        elif queued:
            enqueue(offload, queued, correlation_id=self.correlation_id, owner=self.owner)
        if local and self.in_process_tasks is not None:
            in_process.accept(offload, local, self.owner)
            for call in local:
                self.in_process_tasks.add_task(in_process.run_when_due, offload, call)


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


def caller_subject(request: Request) -> str | None:
    """The caller: the JWT `sub` claim API Gateway's authorizer put in the event (under Mangum).

    None without a JWT (the local system, plain uvicorn): such tasks have no owner. A JWT
    without a `sub` is refused with 401: its holder cannot be told apart from other such
    holders, who would share one identity (each other's tasks and Idempotency-Keys).
    """
    event = request.scope.get("aws.event") or {}
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    jwt = authorizer.get("jwt")
    if jwt is None:
        return None
    subject = str((jwt.get("claims") or {}).get("sub") or "").strip()
    if not subject:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="the token has no subject (sub claim): the caller cannot be identified",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return subject


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
    subject = caller_subject(request)
    scope = subject or "anonymous"
    return IdempotentRequest(key=f"{scope}\n{key}", fingerprint=digest, owner=subject)


async def durable_background_tasks(
    request: Request, in_process_tasks: InProcessTasks, offload: OffloadDep
) -> AsyncIterator[DurableBackgroundTasks]:
    tasks = DurableBackgroundTasks(
        offload,
        correlation_id(request),
        await idempotent_request(request),
        request.scope.get("aws.context"),
        owner=caller_subject(request),
        in_process_tasks=in_process_tasks,
    )
    yield tasks
    if tasks.pending:
        try:
            if tasks.lambda_context is not None:
                # Under Mangum the event loop serves this one request: the send blocks nothing
                # else. A thread-pool hop would cost a new thread per request (anyio stops its
                # worker threads when their root task ends, and Mangum makes each request one).
                tasks.flush()
            else:
                await to_thread.run_sync(tasks.flush, limiter=_limiter())
        except IdempotencyConflictError as exc:
            # Same key, different request (or the first still running): documented as 409.
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except in_process.QueueNotConfiguredError as exc:
            # A deployment error, not a transient one: no Retry-After.
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc


BackgroundTasks = Annotated[
    DurableBackgroundTasks, Depends(durable_background_tasks, scope="function")
]
