"""`python -m offload.dlq` against moto: list, redrive (moto's fallback) and purge."""

import io
import json
from uuid import uuid4

import pytest

from local.lambda_runtime import LambdaContext, sqs_event
from offload import dlq
from offload.aws import sqs
from offload.enqueue import TaskCall, enqueue
from offload.notifications import write_log
from offload.registry import definition_of
from tests.support import AwsStack
from workers.tasks import handler as tasks_handler


def run_worker(aws: AwsStack) -> None:
    """One TaskWorker invocation over what is on the task queue; Lambda's deletes included."""
    messages = aws.receive_all(aws.task_queue, visibility=30)
    result = tasks_handler(
        sqs_event(messages, sqs.queue_arn(aws.task_queue)),  # type: ignore[arg-type]
        LambdaContext(function_name="TaskWorker", timeout_seconds=30),
    )
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    sqs.delete_batch(aws.task_queue, [m for m in messages if m["MessageId"] not in failed])  # type: ignore[arg-type]


@pytest.fixture
def dead_task(aws: AwsStack) -> str:
    """A write_log task that was dead-lettered: its message named an unknown kind."""
    (message,) = enqueue([TaskCall(definition_of(write_log), {"message": "hi"})])
    broken = message.model_copy(update={"kind": "no_such_task"})
    aws.receive_all(aws.task_queue, visibility=30)  # drop the good copy
    sqs.send_messages(aws.task_queue, [broken])
    run_worker(aws)
    assert aws.task(message.task_id)["state"] == "dead"  # type: ignore[index]
    return str(message.task_id)


def test_list_shows_task_kind_attempts_and_last_error(
    dead_task: str, aws: AwsStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dlq.main(["list", "--queue", "tasks", "--json"]) == 0

    (line,) = capsys.readouterr().out.splitlines()
    listed = json.loads(line)
    assert listed["task_id"] == dead_task and listed["queue"] == "tasks"
    assert listed["kind"] == "no_such_task" and listed["attempts"] == 1
    assert "no task named 'no_such_task'" in listed["error"]
    assert len(aws.receive_all(aws.task_dlq)) == 1, "listing must leave the messages in place"


def test_redrive_moves_messages_back_and_requeues_their_tasks(
    dead_task: str, aws: AwsStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dlq.main(["redrive"]) == 0

    assert "tasks: 1 message(s) redriven" in capsys.readouterr().out
    assert aws.receive_all(aws.task_dlq) == []
    (moved,) = aws.receive_all(aws.task_queue)
    assert moved["MessageAttributes"]["task_id"]["StringValue"] == dead_task
    assert "error" not in moved["MessageAttributes"]
    assert aws.task(dead_task)["state"] == "queued"  # type: ignore[index]


def test_purge_empties_the_dlq(dead_task: str, aws: AwsStack) -> None:
    assert dlq.main(["purge", "--queue", "tasks", "--yes"]) == 0
    assert aws.receive_all(aws.task_dlq) == []


def test_purge_without_yes_and_no_terminal_purges_nothing(
    dead_task: str,
    aws: AwsStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given no terminal to answer the question (stdin at EOF)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    # When purge runs without --yes
    assert dlq.main(["purge", "--queue", "tasks"]) == 1

    # Then it says so, and the dead letter is still there
    assert "nothing purged (pass --yes" in capsys.readouterr().out
    assert len(aws.receive_all(aws.task_dlq)) == 1


def test_stack_outputs_give_the_queue_urls(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from offload.settings import get_settings

    for name in ("OFFLOAD_TASK_QUEUE_URL", "OFFLOAD_TASK_DLQ_URL", "OFFLOAD_EMAIL_QUEUE_URL"):
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    sqs.send_raw(aws.task_dlq, json.dumps({"task_id": str(uuid4())}), {})

    assert dlq.main(["list", "--stack", "offload-local", "--queue", "tasks"]) == 0

    assert "tasks: 1 message(s)" in capsys.readouterr().out
