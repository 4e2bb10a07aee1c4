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
from fastapi import Depends, Request

from offload.enqueue import TaskCall, enqueue
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

    def __init__(self, correlation_id: str | None = None) -> None:
        self.correlation_id = correlation_id
        self._calls: list[TaskCall] = []

    def add_task(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> UUID:
        """Validate a call to a registered task and queue it; returns the task id."""
        definition = definition_of(func)
        call = TaskCall(definition, definition.payload(*args, **kwargs))
        self._calls.append(call)
        return call.task_id

    @property
    def pending(self) -> list[TaskCall]:
        return list(self._calls)

    def flush(self) -> None:
        calls, self._calls = self._calls, []
        if calls:
            enqueue(calls, correlation_id=self.correlation_id)


def correlation_id(request: Request) -> str | None:
    """The caller's correlation id, else API Gateway's request id (under Mangum)."""
    header = request.headers.get(CORRELATION_HEADER)
    if header:
        return header[:128]
    event = request.scope.get("aws.event") or {}
    request_id = (event.get("requestContext") or {}).get("requestId")
    return str(request_id) if request_id else None


async def durable_background_tasks(request: Request) -> AsyncIterator[DurableBackgroundTasks]:
    tasks = DurableBackgroundTasks(correlation_id(request))
    yield tasks
    if tasks.pending:
        await to_thread.run_sync(tasks.flush, limiter=_limiter())


BackgroundTasks = Annotated[
    DurableBackgroundTasks, Depends(durable_background_tasks, scope="function")
]
