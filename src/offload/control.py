"""Find, cancel and retry a task, as its caller may: the logic behind GET /tasks/{id}, DELETE
/tasks/{id} and POST /tasks/{id}/retry (offload.status), for any other caller too.

    from offload.control import cancel, retry

    cancel(offload, task_id, subject)    # → the task, cancelled; RefusedError(state) if it started
    retry(offload, task_id, subject)     # → the task, queued again; RefusedError(state) unless dead

`subject` is the caller (a JWT `sub`; None: no identity). Another caller's task is NoSuchTaskError,
exactly like a missing one.
"""

from typing import Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from offload.errors import EnqueueError
from offload.models import TaskRecord, TaskState, unrecorded, utcnow
from offload.observability import logger
from offload.wiring import Offload


class NoSuchTaskError(LookupError):
    """No such task, or another caller's."""

    def __init__(self, task_id: UUID) -> None:
        super().__init__(f"no task {task_id}")


class RefusedError(Exception):
    """The task is not in a state that allows it: `state` says which it is in."""

    def __init__(self, detail: str, state: TaskState) -> None:
        super().__init__(detail)
        self.detail = detail
        self.state = state


def find(offload: Offload, task_id: UUID, subject: str | None) -> TaskRecord:
    """The task as `subject` may see it: its record, or `queued` for a record-less id issued to
    them (offload.task_ids); NoSuchTaskError otherwise."""
    record = offload.tasks.get(task_id)
    if record is None:
        record = unrecorded(task_id, subject, utcnow(), offload.settings.message_retention_seconds)
    if record is None or not record.visible_to(subject):
        raise NoSuchTaskError(task_id)
    return record


def cancel(offload: Offload, task_id: UUID, subject: str | None) -> TaskRecord:
    """Cancel a task that has not started (queued, scheduled or retrying): `cancelled`, its
    one-time schedule deleted; a worker that receives its message drops it. RefusedError with the
    task's state if it is running or finished."""
    cancelled, state = offload.tasks.cancel(task_id, subject)
    if state is None:
        raise NoSuchTaskError(task_id)
    if not cancelled:
        raise RefusedError(
            f"task {task_id} is {state}: only a task that has not started can be cancelled", state
        )
    if offload.settings.schedule_group:
        try:
            offload.scheduler.delete(task_id)
        except (BotoCoreError, ClientError):  # its worker drops the firing's message anyway
            logger.exception("one-time schedule not deleted", extra={"task_id": str(task_id)})
    return find(offload, task_id, subject)


def retry(offload: Offload, task_id: UUID, subject: str | None) -> TaskRecord:
    """Queue a dead task again, under its id, with the SQS message it died with; its history
    keeps why it died. RefusedError with the task's state unless it is dead and kept its message;
    EnqueueError (the task is then `failed`, "not enqueued") if SQS refuses the message."""
    record = find(offload, task_id, subject)
    if record.state is not TaskState.DEAD:
        raise RefusedError(
            f"task {task_id} is {record.state}: only a dead task can be retried", record.state
        )
    kept = offload.tasks.dead_message(task_id)
    if kept is None:
        raise RefusedError(
            f"task {task_id} did not keep its message (too large, or its worker stopped on its "
            "last attempt): redrive it from its dead-letter queue (offload dlq redrive)",
            record.state,
        )
    if not offload.tasks.requeue_dead(record):
        now = find(offload, task_id, subject)
        raise RefusedError(f"task {task_id} changed meanwhile: it is {now.state}", now.state)
    queue, body = kept
    attributes: dict[str, Any] = {"task_id": {"DataType": "String", "StringValue": str(task_id)}}
    if record.kind:
        attributes["kind"] = {"DataType": "String", "StringValue": record.kind}
    try:
        offload.sqs.send_raw(offload.settings.queue_url(queue), body, attributes)
    except (BotoCoreError, ClientError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        offload.tasks.not_enqueued(task_id, record.kind or "unknown", record.owner, reason)
        raise EnqueueError(f"task {task_id} could not be queued again: {reason}") from exc
    logger.info("dead task queued again", extra={"task_id": str(task_id), "queue": queue})
    return find(offload, task_id, subject)
