"""Hand tasks to SQS: record each as queued and send its message."""

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from uuid import UUID, uuid4

from offload import claim_check
from offload.errors import EnqueueError
from offload.models import TaskMessage, TaskState
from offload.observability import logger
from offload.queues import QueueName
from offload.registry import TaskDefinition
from offload.wiring import Offload


@dataclass(frozen=True)
class TaskCall:
    """A call of a task (a @task or a plain top-level function), with its JSON-ready arguments."""

    definition: TaskDefinition
    payload: dict[str, Any]
    task_id: UUID = field(default_factory=uuid4)

    @property
    def kind(self) -> str:
        return self.definition.name

    @property
    def queue(self) -> QueueName:
        return self.definition.queue

    def run(self) -> Any:
        """Run the task here, from its payload, as a worker would."""
        return self.definition.run(self.payload)


@cache
def _io_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="offload-enqueue")


def _record_queued(offload: Offload, messages: Sequence[TaskMessage], owner: str | None) -> None:
    for message in messages:
        offload.tasks.create(message.task_id, message.kind, owner)


def enqueue(
    offload: Offload,
    calls: Sequence[TaskCall],
    correlation_id: str | None = None,
    owner: str | None = None,
) -> list[TaskMessage]:
    """Record every task as queued and send the messages, batched per queue.

    The status write and the SQS send run side by side. The status write is conditional, so a
    worker that is already running the task is never set back to queued. If SQS refuses a
    message, its task is marked failed and EnqueueError is raised: the caller answers 503 rather
    than promise work that was never queued. A task SQS accepted is durable even if its status
    write failed: that is logged as a warning, and the worker's first transition creates the
    record, with the owner the message carries.
    """
    settings = offload.settings
    messages = [
        claim_check.check_in(
            TaskMessage(
                task_id=call.task_id,
                kind=call.kind,
                payload=call.payload,
                correlation_id=correlation_id,
                owner=owner,
            ),
            offload.payloads,
            settings.max_message_bytes,
        )
        for call in calls
    ]
    by_queue: dict[QueueName, list[TaskMessage]] = defaultdict(list)
    for call, message in zip(calls, messages, strict=True):
        by_queue[call.queue].append(message)

    recorded = _io_pool().submit(_record_queued, offload, messages, owner)
    refused: dict[UUID, str] = {}
    for queue, batch in by_queue.items():
        refused.update(offload.sqs.send_messages(settings.queue_url(queue), batch))
    try:
        recorded.result()
        unrecorded = None
    except Exception as exc:  # the tasks SQS took are durable: warn below, still answer 202
        unrecorded = f"{type(exc).__name__}: {exc}"

    for message in messages:
        reason = refused.get(message.task_id)
        extra = {
            "task_id": str(message.task_id),
            "kind": message.kind,
            "correlation_id": correlation_id,
        }
        if reason is None:
            if unrecorded is not None:
                logger.warning(
                    "task queued but its status was not recorded; the worker will record it",
                    extra={**extra, "reason": unrecorded},
                )
            logger.info("task queued", extra=extra)
        else:
            logger.error("task not enqueued", extra={**extra, "reason": reason})
            error = f"not enqueued: {reason}"
            try:
                offload.tasks.transition(
                    message.task_id, message.kind, TaskState.FAILED, error=error
                )
            except Exception:  # the client gets its 503 all the same
                logger.exception("task not marked failed", extra=extra)
    if refused:
        raise EnqueueError(f"SQS did not accept {len(refused)} of {len(messages)} tasks")
    return messages
