"""`offload dlq` against moto: list, redrive and purge, through the command."""

import json
import os
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import boto3
import pytest

from example_app.emails import send_email
from example_app.notifications import write_log
from offload import dlq
from offload.cli.output import ExitCode
from offload.enqueue import TaskCall, enqueue
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.models import TaskMessage, TaskState
from offload.registry import definition_of
from tests.support import REGION, AwsStack, JsonLogs, compose, installed, offload_command
from workers.email import handler as email_handler
from workers.tasks import handler as tasks_handler

Handler = Callable[[dict[str, Any], Any], Any]


@pytest.fixture(autouse=True)
def short_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter long polls at the end of a DLQ scan: the tests' queues are in-process moto."""
    monkeypatch.setattr(dlq, "WAIT_SECONDS", 1, raising=False)
    monkeypatch.setattr(dlq, "EMPTY_RECEIVES", 2, raising=False)


def run_worker(aws: AwsStack, queue_url: str = "", handler: Handler = tasks_handler) -> int:
    """One worker invocation over what is on a queue; Lambda's deletes included. Returns the
    number of records it was given."""
    queue_url = queue_url or aws.task_queue
    messages = aws.receive_all(queue_url, visibility=30)
    if not messages:
        return 0
    result = handler(
        sqs_event(messages, installed().sqs.queue_arn(queue_url)),  # type: ignore[arg-type]
        LambdaContext(function_name="Worker", timeout_seconds=30),
    )
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    installed().sqs.delete_batch(queue_url, [m for m in messages if m["MessageId"] not in failed])  # type: ignore[arg-type]
    return len(messages)


def dead_letter(queue_url: str, message: TaskMessage, error: str = "Throttling") -> None:
    """Put a task's message in a DLQ as the worker does (body, attributes, `error`)."""
    boto3.client("sqs", region_name=REGION).send_message(
        QueueUrl=queue_url,
        MessageBody=message.model_dump_json(),
        MessageAttributes={
            "task_id": {"DataType": "String", "StringValue": str(message.task_id)},
            "kind": {"DataType": "String", "StringValue": message.kind},
            "error": {"DataType": "String", "StringValue": error},
        },
    )


def dead_write_logs(aws: AwsStack, count: int, label: str) -> list[TaskMessage]:
    """`count` write_log tasks that died: `dead` after 5 receives, their messages not yet
    anywhere (the caller puts them in the DLQ)."""
    calls = [TaskCall(definition_of(write_log), {"message": f"{label} {i}"}) for i in range(count)]
    messages = enqueue(installed(), calls)
    installed().sqs.delete_batch(aws.task_queue, aws.receive_all(aws.task_queue, visibility=30))  # type: ignore[arg-type]
    tasks = installed().tasks
    for message in messages:
        claim = tasks.claim(message.task_id, message.kind, attempts=5, lease_seconds=30)
        assert claim.token is not None
        tasks.finish(message.task_id, claim.token, TaskState.DEAD, attempts=5, error="Throttling")
    return messages


@pytest.fixture
def dead_task(aws: AwsStack) -> str:
    """A write_log task that was dead-lettered: its message named an unknown kind."""
    (message,) = enqueue(installed(), [TaskCall(definition_of(write_log), {"message": "hi"})])
    broken = message.model_copy(update={"kind": "no_such_task"})
    aws.receive_all(aws.task_queue, visibility=30)  # drop the good copy
    installed().sqs.send_messages(aws.task_queue, [broken])
    run_worker(aws)
    assert aws.task(message.task_id)["state"] == "dead"  # type: ignore[index]
    return str(message.task_id)


def dlq_command(*args: str) -> Any:
    """`offload dlq ARGS` on this test's moto stack (the Offload its workers run on)."""
    return offload_command("dlq", *args, obj=installed())


def test_list_shows_task_kind_attempts_and_last_error(dead_task: str, aws: AwsStack) -> None:
    result = dlq_command("list", "--queue", "tasks", "--json")

    assert result.exit_code == 0, result.output
    (queue,) = json.loads(result.stdout)
    assert queue["queue"] == "tasks" and queue["count"] == 1
    assert queue["dlq"] == aws.task_dlq.rsplit("/", 1)[-1]
    (listed,) = queue["messages"]
    assert listed["task_id"] == dead_task
    assert listed["kind"] == "no_such_task" and listed["attempts"] == 1
    assert "no task named 'no_such_task'" in listed["error"]
    assert len(aws.receive_all(aws.task_dlq)) == 1, "listing must leave the messages in place"


def test_list_prints_a_table_per_queue(dead_task: str) -> None:
    result = dlq_command("list")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tasks: 1 message(s) in ")
    assert lines[1].split() == ["TASK", "ID", "KIND", "ATTEMPTS", "LAST", "ERROR"]
    assert lines[2].split()[:3] == [dead_task, "no_such_task", "1"]
    assert any(line.startswith("email: 0 message(s) in ") for line in lines)


def test_redrive_moves_messages_back_and_requeues_their_tasks(
    dead_task: str, aws: AwsStack
) -> None:
    result = dlq_command("redrive")

    assert result.exit_code == 0, result.output
    assert "tasks: 1 message(s) redriven" in result.stdout
    assert aws.receive_all(aws.task_dlq) == []
    (moved,) = aws.receive_all(aws.task_queue)
    assert moved["MessageAttributes"]["task_id"]["StringValue"] == dead_task
    assert "error" not in moved["MessageAttributes"]
    assert aws.task(dead_task)["state"] == "queued"  # type: ignore[index]


def test_redrive_json_reports_each_queue_and_logs_apart(dead_task: str, aws: AwsStack) -> None:
    # Given, beside the dead task's message, one that names no task (the tool logs a warning)
    installed().sqs.send_raw(aws.task_dlq, "this is not a task", {})

    result = dlq_command("redrive", "--queue", "tasks", "--json")

    # Then stdout is the report alone, as JSON; the log line went to stderr
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "queue": "tasks",
            "redriven": 1,
            "dropped": 0,
            "left": {"names no task": 1},
            "truncated": False,
        }
    ]
    assert "dead letter left in the DLQ" in result.stderr
    # as a line for people, with its reason, not the library's JSON for CloudWatch
    line = next(li for li in result.stderr.splitlines() if "dead letter left" in li)
    assert line.startswith("WARNING dead letter left in the DLQ") and "reason=" in line, line


def test_purge_empties_the_dlq(dead_task: str, aws: AwsStack) -> None:
    result = dlq_command("purge", "--queue", "tasks", "--yes")

    assert result.exit_code == 0, result.output
    assert "tasks: DLQ purged" in result.stdout
    assert aws.receive_all(aws.task_dlq) == []


def test_purge_without_yes_and_no_terminal_purges_nothing(dead_task: str, aws: AwsStack) -> None:
    # Given no terminal to answer the question (stdin at EOF): when purge runs without --yes
    result = dlq_command("purge", "--queue", "tasks")

    # Then it says so, exits 1, and the dead letter is still there
    assert result.exit_code == ExitCode.FAILED
    assert "nothing purged (pass --yes" in result.stderr
    assert len(aws.receive_all(aws.task_dlq)) == 1


def test_stack_outputs_give_the_queue_urls(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no queue settings in the environment, only the stack
    for name in ("OFFLOAD_TASK_QUEUE_URL", "OFFLOAD_TASK_DLQ_URL", "OFFLOAD_EMAIL_QUEUE_URL"):
        monkeypatch.delenv(name)
    compose(monkeypatch)
    installed().sqs.send_raw(aws.task_dlq, json.dumps({"task_id": str(uuid4())}), {})

    # When the command composes its own Offload from the stack's outputs
    result = offload_command("dlq", "list", "--stack", "offload-local", "--queue", "tasks")

    # Then it lists that stack's DLQ, and leaves the environment as it found it
    assert result.exit_code == 0, result.output
    assert "tasks: 1 message(s)" in result.stdout
    assert "OFFLOAD_TASK_QUEUE_URL" not in os.environ


def test_a_stack_that_does_not_exist_is_not_found(aws: AwsStack) -> None:
    result = offload_command("dlq", "list", "--stack", "no-such-stack")

    assert result.exit_code == ExitCode.NOT_FOUND
    assert "no stack no-such-stack" in result.stderr


def test_redrive_drops_a_copy_of_a_task_that_already_succeeded(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    # Given an email task that succeeded: one email sent
    definition = definition_of(send_email)
    payload = definition.payload(to="bob@example.com", subject="Hi", text="Hello")
    (message,) = enqueue(installed(), [TaskCall(definition, payload)])
    assert run_worker(aws, aws.email_queue, email_handler) == 1
    assert len(aws.sent_emails()) == 1
    assert aws.task(message.task_id)["state"] == "succeeded"  # type: ignore[index]
    # And a copy of its message in the EmailDeadLetterQueue (a duplicate delivery that waited
    # behind the first one until its receives ran out)
    dead_letter(aws.email_dlq, message, "task is running in another delivery")
    # And its idempotency record gone: DynamoDB's TTL removed it after 24 h
    idempotency = boto3.client("dynamodb", region_name=REGION)
    for item in aws.table_items(aws.idempotency_table):
        idempotency.delete_item(TableName=aws.idempotency_table, Key={"id": item["id"]})

    # When an operator redrives the email DLQ, and the worker takes whatever is on its queue
    redriven = dlq_command("redrive", "--queue", "email")
    assert redriven.exit_code == 0, redriven.output
    run_worker(aws, aws.email_queue, email_handler)

    # Then the task is still succeeded and no second email went out
    assert aws.task(message.task_id)["state"] == "succeeded"  # type: ignore[index]
    assert len(aws.sent_emails()) == 1
    # And the copy is gone from the DLQ, dropped with a log line that names the task
    assert aws.receive_all(aws.email_dlq) == []
    (dropped,) = json_logs.find("dead letter dropped: its task already finished")
    assert dropped["task_id"] == str(message.task_id) and dropped["state"] == "succeeded"
    assert "email: 0 message(s) redriven" in redriven.stdout and "1 dropped" in redriven.stdout


@pytest.fixture
def after_first_empty_receive(aws: AwsStack) -> Iterator[list[Callable[[], None]]]:
    """Actions to run once, right after the DLQ tool's first ReceiveMessage that returned
    nothing (as if a worker dead-lettered more messages just then)."""
    actions: list[Callable[[], None]] = []

    def hook(parsed: dict[str, Any], **_: Any) -> None:
        if not parsed.get("Messages") and actions:
            actions.pop(0)()

    installed().clients.sqs_long_poll.meta.events.register("after-call.sqs.ReceiveMessage", hook)
    yield actions
    installed().clients.sqs_long_poll.meta.events.unregister("after-call.sqs.ReceiveMessage", hook)


def test_redrive_moves_exactly_the_reset_messages_beyond_one_receive(
    aws: AwsStack,
    json_logs: JsonLogs,
    after_first_empty_receive: list[Callable[[], None]],
) -> None:
    # Given 25 dead tasks whose messages are in the TaskDeadLetterQueue (one receive returns 10)
    early = dead_write_logs(aws, 25, "early")
    for message in early:
        dead_letter(aws.task_dlq, message)
    # And 5 more tasks that die while the redrive runs: their messages reach the DLQ just after
    # the tool's first receive that came back empty
    late = dead_write_logs(aws, 5, "late")
    after_first_empty_receive.append(lambda: [dead_letter(aws.task_dlq, m) for m in late])

    # When an operator redrives the task DLQ (its SQS client the one hooked above)
    result = dlq_command("redrive", "--queue", "tasks")

    # Then all 30 messages are back on the TaskQueue, each task queued, and the DLQ is empty
    assert result.exit_code == 0, result.output
    assert "tasks: 30 message(s) redriven" in result.stdout
    assert not after_first_empty_receive, "the DLQ tool never saw an empty receive"
    assert aws.receive_all(aws.task_dlq) == []
    on_queue = aws.receive_all(aws.task_queue)
    every = {str(m.task_id) for m in early + late}
    assert sorted(m["MessageAttributes"]["task_id"]["StringValue"] for m in on_queue) == sorted(
        every
    )
    assert {aws.task(t)["state"] for t in every} == {"queued"}  # type: ignore[index]

    # And the worker runs every one of them: none is skipped as a duplicate of a dead task
    while run_worker(aws):
        pass
    assert {aws.task(t)["state"] for t in every} == {"succeeded"}  # type: ignore[index]
    assert json_logs.find("task already finished; duplicate delivery skipped") == []


def test_redrive_leaves_what_it_cannot_reset_in_the_dlq_and_says_why(aws: AwsStack) -> None:
    # Given, in the task DLQ: a dead task, a message that names no task, a task with no status
    # record, and a task that another delivery is running right now
    (dead,) = dead_write_logs(aws, 1, "dead")
    dead_letter(aws.task_dlq, dead)
    installed().sqs.send_raw(aws.task_dlq, "this is not a task", {})
    unknown = TaskMessage(kind="write_log", payload={"message": "no record"})
    dead_letter(aws.task_dlq, unknown)
    (running,) = dead_write_logs(aws, 1, "running")
    boto3.client("dynamodb", region_name=REGION).update_item(
        TableName=aws.tasks_table,
        Key={"task_id": {"S": str(running.task_id)}},
        UpdateExpression="SET #s = :running",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":running": {"S": "running"}},
    )
    dead_letter(aws.task_dlq, running)

    # When an operator redrives the task DLQ
    result = dlq_command("redrive", "--queue", "tasks")

    # Then only the dead task's message moved; the other three wait in the DLQ, visible again
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tasks: 1 message(s) redriven" in out and "3 left in the DLQ" in out
    (moved,) = aws.receive_all(aws.task_queue)
    assert moved["MessageAttributes"]["task_id"]["StringValue"] == str(dead.task_id)
    assert len(aws.receive_all(aws.task_dlq)) == 3
    assert aws.task(unknown.task_id) is None
    assert aws.task(running.task_id)["state"] == "running"  # type: ignore[index]
    assert "names no task" in out and "no status record" in out and "is running" in out


def test_a_redrive_stops_at_its_bound_and_says_so_and_the_next_one_finishes(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 12 dead tasks in the DLQ, and a bound of 10 messages per run
    monkeypatch.setattr(dlq, "MAX_MESSAGES", 10)
    messages = dead_write_logs(aws, 12, "bounded")
    for message in messages:
        dead_letter(aws.task_dlq, message)

    # When an operator redrives twice
    first = dlq_command("redrive", "--queue", "tasks").stdout
    second = dlq_command("redrive", "--queue", "tasks").stdout

    # Then the first run moved 10 and said it stopped; the second moved the other 2
    assert "tasks: 10 message(s) redriven" in first and "stopped after 10 messages" in first
    assert "tasks: 2 message(s) redriven" in second and "stopped" not in second
    assert len(aws.receive_all(aws.task_queue)) == 12
    assert aws.receive_all(aws.task_dlq) == []
