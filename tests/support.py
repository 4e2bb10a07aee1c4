"""Helpers shared by the test tiers: events/, the moto stack handle, JSON log capture."""

import io
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from offload.models import TaskMessage

if TYPE_CHECKING:
    from offload.models import TaskState
    from offload.wiring import Offload

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"
SENDER = "sender@example.com"
STACK_PARAMETERS = {"Stage": "dev", "SenderEmail": SENDER}


SCHEDULE_ARN = "arn:aws:scheduler:us-east-1:123456789012:schedule/offload-local-tasks/Heartbeat"


def fired(properties: dict[str, Any], scheduled_time: str = "2026-12-01T08:00:00Z") -> str:
    """A schedule's Target Input as EventBridge Scheduler sends it, context attributes filled
    in (`properties`: an AWS::Scheduler::Schedule's, or GetSchedule's answer)."""
    text: str = properties["Target"]["Input"]
    return (
        text.replace("<aws.scheduler.schedule-arn>", SCHEDULE_ARN)
        .replace("<aws.scheduler.scheduled-time>", scheduled_time)
        .replace("<aws.scheduler.execution-id>", "d32c5kddcf5bb8c3")
        .replace("<aws.scheduler.attempt-number>", "1")
    )


def owned_task(
    offload: "Offload",
    owner: str | None,
    state: "TaskState | None" = None,
    kind: str = "write_log",
    task_id: "UUID | None" = None,
) -> "UUID":
    """A task a worker has recorded: claimed (`running`), then moved to `state` if given."""
    from offload.task_ids import new_task_id

    task_id = task_id or new_task_id(owner)
    claim = offload.tasks.claim(task_id, kind, attempts=1, lease_seconds=60, owner=owner)
    assert claim.taken and claim.token is not None
    if state is not None and state.value != "running":
        assert offload.tasks.finish(task_id, claim.token, state, attempts=1, error=None)
    return task_id


def load_event(name: str) -> dict[str, Any]:
    """An event from events/, as AWS sends it (a fresh copy each call)."""
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


EventLoader = Callable[[str], dict[str, Any]]


def free_port() -> int:
    """A port free on 127.0.0.1 now (several suites run at once: never a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def task_message(message: dict[str, Any]) -> TaskMessage:
    """The task message in an SQS message (as boto3's receive_message returns it)."""
    return TaskMessage.model_validate_json(message["Body"])


@dataclass
class AwsStack:
    """The template's resources in moto, as the functions see them (their environment)."""

    environment: dict[str, str]
    resources: dict[str, str]

    @property
    def task_queue(self) -> str:
        return self.environment["OFFLOAD_TASK_QUEUE_URL"]

    @property
    def email_queue(self) -> str:
        return self.environment["OFFLOAD_EMAIL_QUEUE_URL"]

    @property
    def task_dlq(self) -> str:
        return self.environment["OFFLOAD_TASK_DLQ_URL"]

    @property
    def email_dlq(self) -> str:
        return self.environment["OFFLOAD_EMAIL_DLQ_URL"]

    @property
    def tasks_table(self) -> str:
        return self.environment["OFFLOAD_TASKS_TABLE"]

    @property
    def idempotency_table(self) -> str:
        return self.environment["OFFLOAD_IDEMPOTENCY_TABLE"]

    @property
    def queues(self) -> list[str]:
        return [self.task_queue, self.email_queue, self.task_dlq, self.email_dlq]

    def receive_all(self, queue_url: str, visibility: int = 0) -> list[dict[str, Any]]:
        """Every message visible on a queue (left visible again unless visibility is set)."""
        import boto3

        sqs = boto3.client("sqs", region_name=REGION)
        messages: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=max(visibility, 30),
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                break
            messages.extend(batch)  # type: ignore[arg-type]
        if visibility == 0:
            for message in messages:
                sqs.change_message_visibility(
                    QueueUrl=queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
        return messages

    def sent_emails(self) -> list[Any]:
        """The messages moto's SES has accepted (moto.ses.models.Message objects)."""
        from moto.backends import get_backend

        return list(get_backend("ses")[ACCOUNT][REGION].sent_messages)

    def task(self, task_id: object) -> dict[str, Any] | None:
        import boto3

        item = (
            boto3.client("dynamodb", region_name=REGION)
            .get_item(TableName=self.tasks_table, Key={"task_id": {"S": str(task_id)}})
            .get("Item")
        )
        return None if item is None else {k: next(iter(v.values())) for k, v in item.items()}

    def table_items(self, table: str) -> list[dict[str, Any]]:
        import boto3

        return boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]  # type: ignore[return-value]

    def clear(self) -> None:
        import boto3
        from moto.backends import get_backend

        sqs = boto3.client("sqs", region_name=REGION)
        for queue in self.queues:
            sqs.purge_queue(QueueUrl=queue)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        for table, key in ((self.tasks_table, "task_id"), (self.idempotency_table, "id")):
            for item in dynamodb.scan(TableName=table, ProjectionExpression=key)["Items"]:
                dynamodb.delete_item(TableName=table, Key={key: item[key]})
        ses = get_backend("ses")[ACCOUNT][REGION]
        ses.sent_messages.clear()
        ses.sent_message_count = 0
        # The one-time schedules tests created (task-<id>); the template's stay.
        scheduler = boto3.client("scheduler", region_name=REGION)
        group = self.schedule_group
        for schedule in scheduler.list_schedules(GroupName=group, NamePrefix="task-")["Schedules"]:
            scheduler.delete_schedule(Name=schedule["Name"], GroupName=group)

    @property
    def schedule_group(self) -> str:
        return self.environment["OFFLOAD_SCHEDULE_GROUP"]

    def schedule(self, name: str) -> dict[str, Any] | None:
        """A schedule of the stack's group, as EventBridge Scheduler describes it; None if gone."""
        import boto3

        scheduler = boto3.client("scheduler", region_name=REGION)
        try:
            return scheduler.get_schedule(Name=name, GroupName=self.schedule_group)  # type: ignore[return-value]
        except scheduler.exceptions.ResourceNotFoundException:
            return None


class JsonLogs:
    """The JSON lines Powertools Logger writes (what CloudWatch Logs would receive)."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def records(self) -> list[dict[str, Any]]:
        lines = self.stream.getvalue().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def find(self, message: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("message") == message]


# ---------------------------------------------------------------- what the app runs on
def compose(monkeypatch: Any) -> "Offload":
    """Build an Offload from the environment as it is now (settings, fresh clients), and run
    this app's API and workers on it until `monkeypatch` is undone (the end of the test)."""
    from api.main import app
    from offload.fastapi import get_offload
    from offload.wiring import build
    from workers import email, tasks, upload

    offload = build()

    async def composed() -> "Offload":  # a coroutine, as get_offload: no thread-pool hop
        return offload

    monkeypatch.setitem(app.dependency_overrides, get_offload, composed)
    for worker in (email, tasks, upload):
        monkeypatch.setattr(worker.handler, "offload", offload)
    return offload


def installed() -> "Offload":
    """The Offload that this test's API and workers run on (the last compose())."""
    from workers import email

    offload = email.handler.offload
    assert offload is not None, "no Offload composed: use the env or aws fixture"
    return offload


def record_task(
    task_id: Any,
    kind: str,
    state: "TaskState",
    *,
    attempts: int = 1,
    error: str | None = None,
    result: Any = None,
    origin: str | None = None,
) -> None:
    """Record a task in `state` as a worker does: its claim, then (unless `running`) its
    outcome, on the claim."""
    from offload.models import TaskState

    tasks = installed().tasks
    claim = tasks.claim(task_id, kind, attempts=attempts, lease_seconds=30, origin=origin)
    assert claim.token is not None, claim
    if state is not TaskState.RUNNING:
        assert tasks.finish(
            task_id, claim.token, state, attempts=attempts, error=error, result=result
        )


def offload_command(*args: str, obj: Any = None, env: dict[str, str] | None = None) -> Any:
    """`offload ARGS` run in this process (Typer's CliRunner): its exit_code, stdout and stderr.
    `obj`: the Offload that the dlq commands work through (default: composed as they do)."""
    from typer.testing import CliRunner

    from offload.cli.app import app

    return CliRunner().invoke(app, list(args), obj=obj, env=env, catch_exceptions=False)
