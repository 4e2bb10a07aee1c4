"""Hand tasks to SQS: send each task's message; nothing else on the way when all goes well."""

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from uuid import UUID

from offload import claim_check
from offload.errors import EnqueueError
from offload.models import TaskMessage
from offload.observability import logger
from offload.queues import QueueName
from offload.registry import TaskDefinition
from offload.task_ids import issued_at, issued_to, new_task_id
from offload.wiring import Offload


@dataclass(frozen=True)
class TaskCall:
    """A call of a task (a @task or a plain top-level function), with its JSON-ready arguments.
    Its id is issued to no owner unless given (new_task_id(owner), as add_task does)."""

    definition: TaskDefinition
    payload: dict[str, Any]
    task_id: UUID = field(default_factory=lambda: new_task_id(None))

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


def vouches_for_itself(task_id: UUID, owner: str | None) -> bool:
    """Whether the id alone lets GET /tasks/{id} answer `queued` to `owner` until a worker
    records the task: issued to `owner`, with an issue time (offload.task_ids)."""
    return issued_at(task_id) is not None and issued_to(task_id, owner)


def _record_queued(offload: Offload, messages: Sequence[TaskMessage], owner: str | None) -> None:
    for message in messages:
        offload.tasks.create(message.task_id, message.kind, owner)


def enqueue(
    offload: Offload,
    calls: Sequence[TaskCall],
    correlation_id: str | None = None,
    owner: str | None = None,
) -> list[TaskMessage]:
    """Send the tasks' messages, batched per queue: one SQS round trip per queue, and no
    DynamoDB write when every id vouches for itself (new_task_id(owner)).

    A task whose id cannot (an id made elsewhere: uuid4, an Idempotency-Key's seeded id) is
    recorded as `queued` beside the send, by a conditional write that never sets back a task a
    worker has recorded. If SQS refuses a message, its task is recorded `failed` ("not enqueued:
    ...", flagged so that a later send of the same id is still run) and EnqueueError is raised:
    the caller answers 503 rather than promise work that was never queued. A task SQS accepted
    is durable even if its `queued` write failed: that is logged as a warning, and the worker's
    claim records the task, with the owner the message carries.
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

    unproven = [m for m in messages if not vouches_for_itself(m.task_id, owner)]
    recorded = _io_pool().submit(_record_queued, offload, unproven, owner) if unproven else None
    refused: dict[UUID, str] = {}
    for queue, batch in by_queue.items():
        refused.update(offload.sqs.send_messages(settings.queue_url(queue), batch))
    unrecorded = None
    try:
        if recorded is not None:
            recorded.result()
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
            if unrecorded is not None and message in unproven:
                logger.warning(
                    "task queued but its status was not recorded; the worker will record it",
                    extra={**extra, "reason": unrecorded},
                )
            logger.info("task queued", extra=extra)
        else:
            logger.error("task not enqueued", extra={**extra, "reason": reason})
            try:
                offload.tasks.not_enqueued(message.task_id, message.kind, owner, reason)
            except Exception:  # the client gets its 503 all the same
                logger.exception("task not marked failed", extra=extra)
    if refused:
        raise EnqueueError(f"SQS did not accept {len(refused)} of {len(messages)} tasks")
    return messages
