"""The in-process fallback, for plain uvicorn with no queue configured.

A task whose queue URL is not set runs in the API's own process after the response, as
FastAPI's BackgroundTasks would: nothing is durable, a crash loses it, and the logs say so once
per process. On Lambda that is refused (QueueNotConfiguredError, a 503): under Mangum the work
would run before the response, or be frozen with the function.

A call that could never be sent to a worker (a lambda, a closure, a database session as an
argument: NotSendableError) still runs here, as it is, with a warning once per function: with a
queue configured, add_task refuses it.

Status: if OFFLOAD_TASKS_TABLE is set the task is recorded as usual (queued, running, then
succeeded or failed); otherwise nothing is recorded.
"""

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from offload.aws.tasks_table import MAX_LAMBDA_SECONDS
from offload.errors import EnqueueError
from offload.models import TaskState, utcnow
from offload.observability import logger
from offload.queues import QueueName, queue_named
from offload.registry import call
from offload.settings import Settings
from offload.task_ids import new_task_id
from offload.wiring import Offload, running


class QueueNotConfiguredError(EnqueueError):
    """On Lambda, a task whose queue URL is not set: it can neither be queued nor run here."""


class Call(Protocol):
    """A task call as this module runs it: a TaskCall (from its payload) or a LocalCall."""

    @property
    def task_id(self) -> UUID: ...
    @property
    def kind(self) -> str: ...
    @property
    def queue(self) -> QueueName: ...
    @property
    def run_at(self) -> datetime | None: ...
    def run(self) -> Any: ...


@dataclass(frozen=True)
class LocalCall:
    """A call that cannot be sent to a worker (why: `reason`): it runs in this process only,
    with its arguments as they were given."""

    kind: str
    queue: QueueName
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    reason: str
    task_id: UUID = field(default_factory=lambda: new_task_id(None))
    run_at: datetime | None = None

    def run(self) -> Any:
        return call(self.function, *self.args, **self.kwargs)


C = TypeVar("C", bound=Call)


def on_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def runs_here(queue: QueueName, settings: Settings) -> bool:
    """Tasks of this queue run in this process: its URL is not set, and this is not Lambda."""
    return not settings.queue_url(queue) and not on_lambda()


def unqueued(calls: Sequence[C], settings: Settings) -> list[C]:
    """The calls whose queue URL is not configured; refused on Lambda."""
    missing = [c for c in calls if isinstance(c, LocalCall) or not settings.queue_url(c.queue)]
    if missing and on_lambda():
        variable = queue_named(missing[0].queue).url_variable
        raise QueueNotConfiguredError(
            f"{variable} is not set: tasks cannot be queued, and running them inside a Lambda "
            "function is not supported; set the queue URLs in the function's environment"
        )
    return missing


def _warn_in_process(queue: QueueName) -> None:
    """Say, loudly, that this queue's tasks run in-process."""
    variable = queue_named(queue).url_variable
    logger.warning(
        "%s is not set: running tasks in-process, NOT durable "
        "(set the queue URLs, or run the local system: `offload run`)",
        variable,
        extra={"queue": queue, "variable": variable},
    )


def _warn_not_sendable(kind: str, reason: str) -> None:
    """Say that a function's calls could not be queued, and why."""
    logger.warning(
        "%s runs in-process only; with a queue configured, add_task refuses it: %s",
        kind,
        reason,
        extra={"kind": kind, "reason": reason},
    )


def accept(offload: Offload, calls: Sequence[Call], owner: str | None) -> None:
    """Warn (once per process for each queue, and for each function that cannot be sent), and
    record the calls as queued if there is a tasks table; run() runs them later."""
    for task_call in calls:
        if offload.first_time(("in-process queue", task_call.queue)):
            _warn_in_process(task_call.queue)
        if isinstance(task_call, LocalCall):
            kind, reason = task_call.kind, task_call.reason
            if offload.first_time(("not sendable", kind, reason)):
                _warn_not_sendable(kind, reason)
    if offload.settings.tasks_table:
        for task_call in calls:
            if task_call.run_at is not None and task_call.run_at > utcnow():
                offload.tasks.create_scheduled(
                    task_call.task_id, task_call.kind, owner, task_call.run_at
                )
            else:
                offload.tasks.create(task_call.task_id, task_call.kind, owner)


def run_when_due(offload: Offload, task_call: Call) -> None:
    """Run the task now, or at its run_at on a timer thread of this process: NOT durable, a
    restart loses it (the warning of accept() said so)."""
    wait = (task_call.run_at - utcnow()).total_seconds() if task_call.run_at else 0.0
    if wait <= 0:
        run(offload, task_call)
        return
    timer = threading.Timer(wait, run, (offload, task_call))
    timer.daemon = True
    timer.start()


def run(offload: Offload, task_call: Call) -> Any:
    """Run one task in this process (after the response). A failure is logged, never raised."""
    record = bool(offload.settings.tasks_table)  # without one, no client is ever built
    kind = task_call.kind
    task_id = task_call.task_id
    keys = {"task_id": str(task_id), "kind": kind, "in_process": True}
    logger.thread_safe_append_keys(**keys)
    tasks = offload.tasks if record else None
    try:
        token = None
        if tasks is not None:
            claim = tasks.claim(task_id, kind, attempts=1, lease_seconds=MAX_LAMBDA_SECONDS)
            if not claim.taken or claim.token is None:
                logger.warning("in-process task already claimed; not run again")
                return None
            token = claim.token
        try:
            with running(offload):
                result = task_call.run()
        except Exception as exc:
            logger.exception("in-process task failed; it will not be retried")
            if tasks is not None and token is not None:
                error = f"{type(exc).__name__}: {exc}"
                tasks.finish(task_id, token, TaskState.FAILED, attempts=1, error=error)
            return None
        if tasks is not None and token is not None:
            tasks.finish(task_id, token, TaskState.SUCCEEDED, attempts=1, result=result)
        logger.info("in-process task succeeded")
        return result
    finally:
        logger.thread_safe_remove_keys(keys)
