"""Dead-letter queue tooling: list, redrive and purge, per queue, on AWS or the local system.

    python -m offload.dlq list [--queue email]
    python -m offload.dlq redrive [--queue email]
    python -m offload.dlq purge --queue email --yes

Queue URLs come from the OFFLOAD_* settings (what the functions get), or from a stack's outputs
with --stack NAME (`make dlq` uses the local system's stack). A redriven task goes back to
`queued` before its message reaches the source queue, so the worker runs it again.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from offload.aws import sqs, stack, tasks_table
from offload.models import TaskState
from offload.settings import get_settings
from offload.uploads.models import UPLOAD_KIND, parse_upload_key
from offload.uploads.service import s3_records

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

# Stack output → setting, for each queue the tool knows.
STACK_OUTPUTS = {
    "TaskQueueUrl": "OFFLOAD_TASK_QUEUE_URL",
    "TaskDeadLetterQueueUrl": "OFFLOAD_TASK_DLQ_URL",
    "EmailQueueUrl": "OFFLOAD_EMAIL_QUEUE_URL",
    "EmailDeadLetterQueueUrl": "OFFLOAD_EMAIL_DLQ_URL",
    "UploadQueueUrl": "OFFLOAD_UPLOAD_QUEUE_URL",
    "UploadDeadLetterQueueUrl": "OFFLOAD_UPLOAD_DLQ_URL",
    "TasksTableName": "OFFLOAD_TASKS_TABLE",
}
# How long listed or redriven messages stay hidden while the tool holds them.
HOLD_SECONDS = 60
MAX_MESSAGES = 10_000


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
    attempts: int
    error: str | None


def queue_pairs(only: str | None = None) -> list[QueuePair]:
    """The configured queues with their DLQs (upload too, when its URLs are set)."""
    settings = get_settings()
    pairs = [
        QueuePair("tasks", settings.task_queue_url, settings.task_dlq_url),
        QueuePair("email", settings.email_queue_url, settings.email_dlq_url),
        QueuePair("upload", settings.upload_queue_url, settings.upload_dlq_url),
    ]
    pairs = [p for p in pairs if p.queue_url and p.dlq_url and (only in (None, p.name))]
    if not pairs:
        raise SystemExit(
            "no queues configured: set the OFFLOAD_*_QUEUE_URL and OFFLOAD_*_DLQ_URL "
            "variables, or pass --stack NAME"
        )
    return pairs


def _hold_all(dlq_url: str) -> "list[MessageTypeDef]":
    """Receive every message of a DLQ, hidden for HOLD_SECONDS."""
    held: list[MessageTypeDef] = []
    seen: set[str] = set()
    while len(held) < MAX_MESSAGES:
        batch = [
            m
            for m in sqs.receive(dlq_url, visibility_seconds=HOLD_SECONDS)
            if m["MessageId"] not in seen
        ]
        if not batch:
            return held
        seen.update(m["MessageId"] for m in batch)
        held.extend(batch)
    return held


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


def _upload_ids(body: str) -> list[UUID]:
    """The uploads an S3 notification (an UploadQueue message) names."""
    try:
        notification = json.loads(body)
        objects = s3_records(notification) if isinstance(notification, dict) else []
    except (ValueError, KeyError, TypeError):
        return []
    return [parsed[0] for obj in objects if (parsed := parse_upload_key(obj.key)) is not None]


def _tasks_of(message: "MessageTypeDef") -> list[tuple[UUID, str | None]]:
    """The tasks (id, kind if the message says) that a dead letter stands for."""
    task_id = _task_id(message)
    if task_id is not None:
        return [(task_id, _attribute(message, "kind"))]
    return [(upload_id, UPLOAD_KIND) for upload_id in _upload_ids(message["Body"])]


def describe(message: "MessageTypeDef") -> DeadLetter:
    task_id = next(iter(_tasks_of(message)), (None, None))[0]
    status = tasks_table.get(task_id) if task_id else None
    receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "0"))
    error = _attribute(message, "error") or (status.error if status else None)
    return DeadLetter(
        message_id=message["MessageId"],
        task_id=str(task_id) if task_id else None,
        kind=_attribute(message, "kind") or (status.kind if status else None),
        attempts=status.attempts if status and status.attempts else receives,
        error=error,
    )


def list_dead_letters(pair: QueuePair) -> list[DeadLetter]:
    """Every message in the pair's DLQ, described; the messages stay in the DLQ."""
    held = _hold_all(pair.dlq_url)
    try:
        return [describe(m) for m in held]
    finally:
        sqs.release(pair.dlq_url, held)


def redrive(pair: QueuePair) -> int:
    """Move the DLQ's messages back to the source queue; their tasks become queued again.

    On AWS, SQS's own StartMessageMoveTask moves them (asynchronously); where it is not
    available (moto), they are copied to the source queue and deleted from the DLQ here.
    """
    held = _hold_all(pair.dlq_url)
    for message in held:
        for task_id, named_kind in _tasks_of(message):
            status = tasks_table.get(task_id)
            kind = named_kind or (status.kind if status else "unknown")
            tasks_table.transition(task_id, kind, TaskState.QUEUED, allow_from_final=True)
    if not held:
        return 0
    sqs.release(pair.dlq_url, held)
    handle = sqs.start_move_task(sqs.queue_arn(pair.dlq_url), sqs.queue_arn(pair.queue_url))
    if handle is not None:
        return len(held)
    held = _hold_all(pair.dlq_url)
    return sqs.move(pair.dlq_url, pair.queue_url, held)


def purge(pair: QueuePair) -> None:
    sqs.purge(pair.dlq_url)


def _use_stack(name: str) -> None:
    for output, value in stack.outputs(name).items():
        if output in STACK_OUTPUTS:
            os.environ[STACK_OUTPUTS[output]] = value
    get_settings.cache_clear()


def _short(text: str | None, width: int) -> str:
    text = (text or "-").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload.dlq", description=__doc__)
    parser.add_argument("command", choices=["list", "redrive", "purge"])
    parser.add_argument("--queue", help="only this queue: tasks, email or upload")
    parser.add_argument("--stack", help="take queue URLs from this CloudFormation stack")
    parser.add_argument("--yes", action="store_true", help="purge without asking")
    parser.add_argument("--json", action="store_true", help="list as JSON lines")
    args = parser.parse_args(argv)
    if args.stack:
        _use_stack(args.stack)
    pairs = queue_pairs(args.queue)

    if args.command == "purge" and not args.yes:
        names = ", ".join(p.name for p in pairs)
        try:
            answer = input(f"Delete every message in the DLQ of {names}? [y/N] ")
        except EOFError:  # no terminal to ask
            answer = ""
        if answer.lower() != "y":
            print("nothing purged (pass --yes to purge without asking)")
            return 1
    for pair in pairs:
        if args.command == "list":
            letters = list_dead_letters(pair)
            if args.json:
                for letter in letters:
                    print(json.dumps({"queue": pair.name, **letter.__dict__}))
                continue
            print(f"{pair.name}: {len(letters)} message(s) in {pair.dlq_url.rsplit('/', 1)[-1]}")
            if letters:
                print(f"  {'task id':<36}  {'kind':<14}  {'attempts':>8}  last error")
            for letter in letters:
                print(
                    f"  {_short(letter.task_id, 36):<36}  {_short(letter.kind, 14):<14}  "
                    f"{letter.attempts:>8}  {_short(letter.error, 100)}"
                )
        elif args.command == "redrive":
            moved = redrive(pair)
            print(f"{pair.name}: {moved} message(s) redriven to the source queue")
        else:
            purge(pair)
            print(f"{pair.name}: DLQ purged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
