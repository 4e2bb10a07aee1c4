"""Dead-letter queue tooling: list, redrive and purge, per queue, on AWS or the local system.

    offload dlq list [--queue email] [--stack NAME]
    offload dlq redrive [--queue email]
    offload dlq purge --queue email --yes

The command (offload.cli.dlq) works on the running local system by default, or on a deployed
stack's queues with --stack NAME; the functions here take an Offload and the queue pairs.

Redrive decides per message, by the status of the task it names: a `dead` task goes back to
`queued` (a write that requires it to be dead still), then that very message is copied to the
source queue and deleted from the DLQ, so the worker runs it again; a copy of a task that
finished (`succeeded` or `failed`) is deleted, never run again, and logged; anything else
(a message that names no task, a task with no status, a task still running) stays in the DLQ,
counted with the reason.
"""

import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from uuid import UUID

from offload.aws import cloudformation
from offload.aws.sqs import Sqs
from offload.models import TaskState
from offload.observability import logger
from offload.queues import QUEUES
from offload.settings import Settings
from offload.wiring import Offload
from offload.worker.sources import s3_task_ids

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

# Stack output → setting: each queue's and its DLQ's URL, and the tasks table.
STACK_OUTPUTS = {
    **{q.url_output: q.url_variable for q in QUEUES},
    **{q.dlq_url_output: q.dlq_url_variable for q in QUEUES},
    "TasksTableName": "OFFLOAD_TASKS_TABLE",
}
# How long a received dead letter stays hidden while the tool holds it (a batch of ten is
# decided in well under that).
HOLD_SECONDS = 60
# The end of a DLQ: EMPTY_RECEIVES long polls in a row (WAIT_SECONDS each) that bring no message
# not seen before in this run.
WAIT_SECONDS = 2
EMPTY_RECEIVES = 2
# The most messages one run reads; a longer DLQ takes several runs (the report says so).
MAX_MESSAGES = 10_000
FINISHED = (TaskState.SUCCEEDED, TaskState.FAILED)


@dataclass(frozen=True)
class QueuePair:
    name: str
    queue_url: str
    dlq_url: str


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    task_id: str | None
    kind: str | None
    attempts: int | None  # the task's attempts; None when the message names no recorded task
    error: str | None


def queue_pairs(settings: Settings, only: str | None = None) -> list[QueuePair]:
    """The configured queues with their DLQs (those whose URLs are both set)."""
    pairs = [
        QueuePair(q.name, settings.queue_url(q.name), settings.dlq_url(q.name)) for q in QUEUES
    ]
    pairs = [p for p in pairs if p.queue_url and p.dlq_url and (only in (None, p.name))]
    if not pairs:
        raise LookupError(
            "no queues configured: set the OFFLOAD_*_QUEUE_URL and OFFLOAD_*_DLQ_URL "
            "variables, or pass --stack NAME"
        )
    return pairs


class _Scan:
    """Reads a DLQ to its end, in batches of the messages not seen before in this run.

    Each receive is a long poll that hides what it returns for HOLD_SECONDS. The scan ends after
    EMPTY_RECEIVES receives in a row bring nothing new, or at MAX_MESSAGES. It remembers only
    ids and receipt handles (the latest), so memory stays small whatever the bodies.
    """

    def __init__(self, sqs: Sqs, dlq_url: str) -> None:
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.handles: dict[str, str] = {}

    def __iter__(self) -> "Iterator[list[MessageTypeDef]]":
        empty = 0
        while empty < EMPTY_RECEIVES and not self.truncated:
            batch = self.sqs.receive(
                self.dlq_url, visibility_seconds=HOLD_SECONDS, wait_seconds=WAIT_SECONDS
            )
            new = [m for m in batch if m["MessageId"] not in self.handles]
            self.handles.update({m["MessageId"]: m["ReceiptHandle"] for m in batch})
            empty = 0 if new else empty + 1
            if new:
                yield new

    @property
    def truncated(self) -> bool:
        return len(self.handles) >= MAX_MESSAGES

    def release(self, message_ids: Iterable[str]) -> None:
        """Make held messages visible again at once (the rest come back after HOLD_SECONDS)."""
        self.sqs.release(
            self.dlq_url,
            [{"MessageId": i, "ReceiptHandle": self.handles[i]} for i in message_ids],
        )


def _attribute(message: "MessageTypeDef", name: str) -> str | None:
    value = message.get("MessageAttributes", {}).get(name)
    return value.get("StringValue") if value is not None else None


def _task_id(message: "MessageTypeDef") -> UUID | None:
    attribute = _attribute(message, "task_id")
    try:
        if attribute:
            return UUID(attribute)
        return UUID(str(json.loads(message["Body"])["task_id"]))
    except (ValueError, KeyError, TypeError):
        return None


def _tasks_of(message: "MessageTypeDef") -> list[UUID]:
    """The tasks that a dead letter stands for: the task of a task message, or those that an S3
    notification names by the key convention (offload.object_keys)."""
    task_id = _task_id(message)
    return [task_id] if task_id is not None else s3_task_ids(message["Body"])


def describe(offload: Offload, message: "MessageTypeDef") -> DeadLetter:
    task_id = next(iter(_tasks_of(message)), None)
    status = offload.tasks.get(task_id) if task_id else None
    error = _attribute(message, "error") or (status.error if status else None)
    return DeadLetter(
        message_id=message["MessageId"],
        task_id=str(task_id) if task_id else None,
        kind=_attribute(message, "kind") or (status.kind if status else None),
        attempts=status.attempts if status else None,
        error=error,
    )


def list_dead_letters(offload: Offload, pair: QueuePair) -> list[DeadLetter]:
    """Every message in the pair's DLQ, described; the messages stay in the DLQ."""
    scan = _Scan(offload.sqs, pair.dlq_url)
    letters: list[DeadLetter] = []
    try:
        for batch in scan:
            letters.extend(describe(offload, m) for m in batch)
    finally:
        scan.release(scan.handles)
    return letters


@dataclass
class RedriveReport:
    """What a redrive did with each message it read from one DLQ."""

    redriven: int = 0
    # Copies of tasks that had already finished: deleted, never run again.
    dropped: int = 0
    # Messages left in the DLQ, by reason.
    left: Counter[str] = field(default_factory=Counter)
    # The run stopped at MAX_MESSAGES; more may be waiting.
    truncated: bool = False

    def summary(self, name: str) -> str:
        text = (
            f"{name}: {self.redriven} message(s) redriven to the source queue, {self.dropped} "
            f"dropped (copies of finished tasks), {self.left.total()} left in the DLQ"
        )
        if self.left:
            text += " (" + "; ".join(f"{n}: {why}" for why, n in self.left.most_common()) + ")"
        if self.truncated:
            text += f"; stopped after {MAX_MESSAGES} messages: run redrive again"
        return text


def _requeue(offload: Offload, task_id: UUID) -> TaskState | None:
    """Reset the task to `queued` if it is dead. Returns the state it was found in (QUEUED
    once reset; DEAD if it changed under every attempt), or None without a status record."""
    state = None
    for _ in range(3):  # re-read if the task changed between the read and the write
        record = offload.tasks.get(task_id)
        state = record.state if record else None
        if state is not TaskState.DEAD:
            return state
        if record and offload.tasks.requeue_dead(record):
            return TaskState.QUEUED
    return state


@dataclass(frozen=True)
class Verdict:
    action: Literal["redrive", "drop", "leave"]
    reason: str
    # The tasks the message names, each with the state it was found in (QUEUED once reset).
    tasks: dict[UUID, TaskState | None]


def _decide(offload: Offload, message: "MessageTypeDef", redriven: set[UUID]) -> Verdict:
    """What to do with one dead letter; resets its dead tasks to `queued`.

    A task found `queued` counts as redriven: a redrive reset it and stopped before moving its
    message (a duplicate copy on the queue is then one more delivery, which the worker dedups).
    """
    task_ids = _tasks_of(message)
    if not task_ids:
        return Verdict("leave", "names no task", {})
    if redriven.intersection(task_ids):
        return Verdict("leave", "another message of its task was redriven in this run", {})
    tasks = {task_id: _requeue(offload, task_id) for task_id in task_ids}
    states = set(tasks.values())
    if TaskState.QUEUED in states:
        redriven.update(t for t, state in tasks.items() if state is TaskState.QUEUED)
        return Verdict("redrive", "dead: reset to queued", tasks)
    if states <= set(FINISHED):
        return Verdict("drop", "its task already finished", tasks)
    return Verdict("leave", _why_left(states), tasks)


def _why_left(states: set[TaskState | None]) -> str:
    if None in states:
        return "no status record for its task (never recorded, or expired)"
    if TaskState.DEAD in states:
        return "its task changed while being reset: redrive again"
    return "its task is " + min(str(s) for s in states if s is not None and s not in FINISHED)


def redrive(offload: Offload, pair: QueuePair) -> RedriveReport:
    """Send the DLQ's dead tasks back to the source queue, exactly those whose tasks were reset.

    Per batch of received messages: decide each (resetting dead tasks to `queued`), copy the
    redriven ones to the source queue and delete them from the DLQ, delete the copies of
    finished tasks. What is left is made visible again at the end. SQS's StartMessageMoveTask
    is not used: it moves every message, including those whose tasks were not reset.
    """
    report = RedriveReport()
    scan = _Scan(offload.sqs, pair.dlq_url)
    left: list[str] = []
    redriven: set[UUID] = set()
    try:
        for batch in scan:
            to_move: list[MessageTypeDef] = []
            to_drop: list[MessageTypeDef] = []
            for message in batch:
                verdict = _decide(offload, message, redriven)
                keys = {"queue": pair.name, "message_id": message["MessageId"]}
                if verdict.action == "redrive":
                    to_move.append(message)
                elif verdict.action == "drop":
                    to_drop.append(message)
                    for task_id, state in verdict.tasks.items():
                        logger.info(
                            "dead letter dropped: its task already finished",
                            extra={**keys, "task_id": str(task_id), "state": state},
                        )
                else:
                    left.append(message["MessageId"])
                    report.left[verdict.reason] += 1
                    logger.warning(
                        "dead letter left in the DLQ",
                        extra={
                            **keys,
                            "reason": verdict.reason,
                            "tasks": list(map(str, verdict.tasks)),
                        },
                    )
            moved = offload.sqs.move(pair.dlq_url, pair.queue_url, to_move)
            report.redriven += moved
            if moved < len(to_move):
                refused = "SQS refused the copy; its task is queued: redrive again"
                report.left[refused] += len(to_move) - moved
            offload.sqs.delete_batch(pair.dlq_url, to_drop)
            report.dropped += len(to_drop)
    finally:
        scan.release(left)
    report.truncated = scan.truncated
    return report


def purge(offload: Offload, pair: QueuePair) -> None:
    offload.sqs.purge(pair.dlq_url)


def stack_environment(stack_name: str) -> dict[str, str]:
    """The OFFLOAD_* variables that a stack's outputs give: its queues', DLQs' and table's."""
    return {
        STACK_OUTPUTS[output]: value
        for output, value in cloudformation.outputs(stack_name).items()
        if output in STACK_OUTPUTS
    }


# The stack that the local system (`offload run`) provisions in its moto.
LOCAL_STACK = "offload-local"


def local_system_environment() -> dict[str, str]:
    """The AWS variables that point clients at the running local system's moto (127.0.0.1 on
    OFFLOAD_MOTO_PORT, 4566 by default; it takes any credentials)."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ.get('OFFLOAD_MOTO_PORT', '4566')}",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }


if __name__ == "__main__":
    # `python -m offload.dlq ARGS` is `offload dlq ARGS`.
    from offload.cli import main

    main(["dlq", *sys.argv[1:]])
