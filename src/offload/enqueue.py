"""Hand tasks to SQS: send each task's message; nothing else on the way when all goes well."""

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from offload import claim_check
from offload.aws import sqs
from offload.aws.scheduler import schedule_name
from offload.errors import EnqueueError, TaskError
from offload.models import TaskMessage, utcnow
from offload.observability import logger
from offload.queues import QueueName
from offload.registry import TaskDefinition
from offload.scheduling import Plan, plan
from offload.task_ids import issued_at, issued_to, new_task_id
from offload.wiring import Offload

# EventBridge Scheduler's largest target input. A task run more than 15 minutes later travels
# in its schedule whole: the claim check's payloads expire long before a year is out.
MAX_SCHEDULE_INPUT_BYTES = 262_144


class TooLargeToScheduleError(TaskError, ValueError):
    """A task message too large for a one-time schedule's input."""


@dataclass(frozen=True)
class TaskCall:
    """A call of a task (a @task or a plain top-level function), with its JSON-ready arguments.
    Its id is issued to no owner unless given (new_task_id(owner), as add_task does)."""

    definition: TaskDefinition
    payload: dict[str, Any]
    task_id: UUID = field(default_factory=lambda: new_task_id(None))
    # When the task runs (offload.scheduling.run_at_of); None: now.
    run_at: datetime | None = None

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


def _message(
    offload: Offload,
    call: TaskCall,
    correlation_id: str | None,
    owner: str | None,
    when: Plan | None,
) -> TaskMessage:
    message = TaskMessage(
        task_id=call.task_id,
        kind=call.kind,
        payload=call.payload,
        correlation_id=correlation_id,
        owner=owner,
    )
    if when is not None and when.scheduled:
        if sqs.message_size(message) > MAX_SCHEDULE_INPUT_BYTES:
            raise TooLargeToScheduleError(
                f"task {call.kind!r}: its message is larger than {MAX_SCHEDULE_INPUT_BYTES} "
                "bytes, the most a schedule carries; run it within 15 minutes, or pass a "
                "reference to its data"
            )
        return message
    limit = offload.settings.max_message_bytes
    return claim_check.check_in(message, lambda: offload.payloads, limit)


def _send_later(
    offload: Offload,
    queue: QueueName,
    messages: Sequence[TaskMessage],
    plans: dict[UUID, Plan],
    owner: str | None,
) -> dict[UUID, str]:
    """Record each task `scheduled` with its run_at (a write: until it runs, its record says
    when), then send its message delayed, or create its one-time schedule. Returns the tasks
    that could not be sent, with why."""
    refused: dict[UUID, str] = {}
    delayed: list[TaskMessage] = []
    for message in messages:
        when = plans[message.task_id]
        name = schedule_name(message.task_id) if when.scheduled else None
        try:
            offload.tasks.create_scheduled(message.task_id, message.kind, owner, when.run_at, name)
            if when.scheduled:
                offload.scheduler.create_one_time(
                    message.task_id,
                    when.run_at,
                    offload.queue_arn(queue),
                    message.model_dump_json(),
                )
            else:
                delayed.append(message)
        except Exception as exc:  # recorded `failed` below; the client gets a 503
            refused[message.task_id] = f"{type(exc).__name__}: {exc}"
    if delayed:
        delays = {m.task_id: plans[m.task_id].delay_seconds for m in delayed}
        url = offload.settings.queue_url(queue)
        refused.update(offload.sqs.send_messages(url, delayed, delays))
    return refused


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

    A call with a `run_at` ahead is recorded `scheduled` first, then sent with a delay (up to
    15 minutes) or as a one-time EventBridge schedule (up to a year): see offload.scheduling.
    """
    settings = offload.settings
    now = utcnow()
    plans = {
        call.task_id: plan(call.run_at, now)
        for call in calls
        if call.run_at is not None and call.run_at > now
    }
    messages = [
        _message(offload, call, correlation_id, owner, plans.get(call.task_id)) for call in calls
    ]
    by_queue: dict[QueueName, list[TaskMessage]] = defaultdict(list)
    later: dict[QueueName, list[TaskMessage]] = defaultdict(list)
    for call, message in zip(calls, messages, strict=True):
        (later if call.task_id in plans else by_queue)[call.queue].append(message)

    unproven = [
        m for m in messages if m.task_id not in plans and not vouches_for_itself(m.task_id, owner)
    ]
    recorded = _io_pool().submit(_record_queued, offload, unproven, owner) if unproven else None
    refused: dict[UUID, str] = {}
    for queue, batch in later.items():
        refused.update(_send_later(offload, queue, batch, plans, owner))
    for queue, batch in by_queue.items():
        refused.update(offload.sqs.send_messages(settings.queue_url(queue), batch))
    unrecorded = None
    try:
        if recorded is not None:
            recorded.result()
    except Exception as exc:  # the tasks SQS took are durable: warn below, still answer 202
        unrecorded = f"{type(exc).__name__}: {exc}"

    _report(
        offload,
        messages,
        refused=refused,
        plans=plans,
        warn_unrecorded=[m.task_id for m in unproven] if unrecorded is not None else [],
        unrecorded=unrecorded,
        owner=owner,
        correlation_id=correlation_id,
    )
    if refused:
        raise EnqueueError(f"SQS did not accept {len(refused)} of {len(messages)} tasks")
    return messages


def _report(
    offload: Offload,
    messages: Sequence[TaskMessage],
    *,
    refused: dict[UUID, str],
    plans: dict[UUID, Plan],
    warn_unrecorded: Sequence[UUID],
    unrecorded: str | None,
    owner: str | None,
    correlation_id: str | None,
) -> None:
    """Log each task's fate; record `failed` those that were not sent (and drop their
    schedules)."""
    for message in messages:
        reason = refused.get(message.task_id)
        extra = {
            "task_id": str(message.task_id),
            "kind": message.kind,
            "correlation_id": correlation_id,
        }
        when = plans.get(message.task_id)
        if reason is None:
            if message.task_id in warn_unrecorded:
                logger.warning(
                    "task queued but its status was not recorded; the worker will record it",
                    extra={**extra, "reason": unrecorded},
                )
            if when is None:
                logger.info("task queued", extra=extra)
            else:
                logger.info("task scheduled", extra={**extra, "run_at": when.run_at.isoformat()})
        else:
            logger.error("task not enqueued", extra={**extra, "reason": reason})
            try:
                if when is not None and when.scheduled:
                    offload.scheduler.delete(message.task_id)  # if it was created after all
                offload.tasks.not_enqueued(message.task_id, message.kind, owner, reason)
            except Exception:  # the client gets its 503 all the same
                logger.exception("task not marked failed", extra=extra)
