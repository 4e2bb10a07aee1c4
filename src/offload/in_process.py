"""The in-process fallback, for plain uvicorn with no queue configured (DESIGN.md).

A task whose queue URL is not set runs in the API's own process after the response, as
FastAPI's BackgroundTasks would: nothing is durable, a crash loses it, and the logs say so once
per process. On Lambda that is refused (QueueNotConfiguredError, a 503): under Mangum the work
would run before the response, or be frozen with the function.

Status: if OFFLOAD_TASKS_TABLE is set the task is recorded as usual (queued, running, then
succeeded or failed); otherwise nothing is recorded.
"""

import os
from collections.abc import Sequence
from functools import cache
from typing import Any

from offload.aws import tasks_table
from offload.enqueue import TaskCall
from offload.errors import EnqueueError
from offload.models import TaskState
from offload.observability import logger
from offload.queues import QueueName, queue_named
from offload.settings import get_settings


class QueueNotConfiguredError(EnqueueError):
    """On Lambda, a task whose queue URL is not set: it can neither be queued nor run here."""


def on_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def unqueued(calls: Sequence[TaskCall]) -> list[TaskCall]:
    """The calls whose queue URL is not configured; refused on Lambda."""
    settings = get_settings()
    missing = [c for c in calls if not settings.queue_url(c.definition.queue)]
    if missing and on_lambda():
        variable = queue_named(missing[0].definition.queue).url_variable
        raise QueueNotConfiguredError(
            f"{variable} is not set: tasks cannot be queued, and running them inside a Lambda "
            "function is not supported; set the queue URLs in the function's environment"
        )
    return missing


@cache
def warn_once(queue: QueueName) -> None:
    """Say once per process, loudly, that this queue's tasks run in-process."""
    variable = queue_named(queue).url_variable
    logger.warning(
        "%s is not set: running tasks in-process, NOT durable "
        "(set the queue URLs or use `make run`)",
        variable,
        extra={"queue": queue, "variable": variable},
    )


def accept(calls: Sequence[TaskCall], owner: str | None) -> None:
    """Warn, and record the calls as queued if there is a tasks table; run() runs them later."""
    for call in calls:
        warn_once(call.definition.queue)
    if get_settings().tasks_table:
        for call in calls:
            tasks_table.create(call.task_id, call.definition.name, owner)


def run(call: TaskCall) -> Any:
    """Run one task in this process (after the response). A failure is logged, never raised."""
    record = bool(get_settings().tasks_table)
    kind = call.definition.name
    keys = {"task_id": str(call.task_id), "kind": kind, "in_process": True}
    logger.thread_safe_append_keys(**keys)
    try:
        if record:
            tasks_table.transition(call.task_id, kind, TaskState.RUNNING, attempts=1)
        try:
            result = call.definition.run(call.payload)
        except Exception as exc:
            logger.exception("in-process task failed; it will not be retried")
            if record:
                error = f"{type(exc).__name__}: {exc}"
                tasks_table.transition(call.task_id, kind, TaskState.FAILED, error=error)
            return None
        if record:
            tasks_table.transition(call.task_id, kind, TaskState.SUCCEEDED, result=result)
        logger.info("in-process task succeeded")
        return result
    finally:
        logger.thread_safe_remove_keys(keys)
