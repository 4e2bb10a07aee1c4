"""A worker killed during a task's last receive: the task must not stay `running` for ever.

The task fails transiently on its first receives, then the worker is killed (the way a Lambda
that runs out of memory or time ends: nothing after that line runs, nothing is written) during
the queue's last receive. Its message then reaches the DLQ through the queue's own redrive
policy (moto's). The status is read through the API, and the DLQ tool redrives the task.
"""

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from fastapi.testclient import TestClient

from api.main import app
from offload import dlq
from offload.enqueue import TaskCall, enqueue
from offload.errors import TransientTaskError
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.registry import definition_of, task
from tests.support import REGION, AwsStack, compose, installed, offload_command
from workers.tasks import handler

# What the next runs of the task do, in order: "fail" (transient error), "kill", or "run".
_script: list[str] = []
_effects: list[str] = []


@task(name="tests_killed_on_last_receive")
def killed_on_last_receive(order: str) -> str:
    step = _script.pop(0) if _script else "run"
    if step == "fail":
        raise TransientTaskError("SES Throttling: Maximum sending rate exceeded")
    if step == "kill":
        # What a killed runtime looks like from here: the invocation ends, no handler code runs.
        raise SystemExit("Runtime exited: out of memory")
    _effects.append(order)
    return f"shipped {order}"


@pytest.fixture
def client(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    # The killed invocation has two seconds left when it takes the record.
    monkeypatch.setenv("OFFLOAD_RECORD_TIME_BUDGET_MS", "0")
    compose(monkeypatch)
    _script.clear()
    _effects.clear()
    monkeypatch.setattr(dlq, "WAIT_SECONDS", 1, raising=False)
    monkeypatch.setattr(dlq, "EMPTY_RECEIVES", 2, raising=False)
    with TestClient(app) as test_client:
        yield test_client


def receive(queue_url: str) -> list[Any]:
    response = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=30,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def deliver(queue_url: str, messages: list[Any] | None = None, seconds_left: int = 30) -> Any:
    """One TaskWorker invocation over received messages (else what is visible); the records
    it did not fail are deleted, as Lambda does. A killed invocation deletes nothing."""
    messages = messages or receive(queue_url)
    assert messages, "nothing to deliver"
    event = sqs_event(messages, installed().sqs.queue_arn(queue_url))  # type: ignore[arg-type]
    context = LambdaContext(function_name="TaskWorker", timeout_seconds=seconds_left)
    try:
        result = handler(event, context)
    except BatchProcessingError:
        return messages
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    installed().sqs.delete_batch(queue_url, [m for m in messages if m["MessageId"] not in failed])
    return messages


def test_a_task_whose_worker_died_on_the_last_receive_ends_dead_and_can_be_redriven(
    aws: AwsStack, client: TestClient
) -> None:
    max_receives = installed().settings.max_receive_count
    (message,) = enqueue(
        installed(), [TaskCall(definition_of(killed_on_last_receive), {"order": "A-1"})]
    )
    status_url = f"/tasks/{message.task_id}"

    # Given a task that failed transiently on every receive but the last
    _script.extend(["fail"] * (max_receives - 1) + ["kill"])
    for _ in range(max_receives - 1):
        installed().sqs.release(aws.task_queue, deliver(aws.task_queue))  # its backoff has passed
    assert client.get(status_url).json()["state"] == "retrying"

    # When the worker is killed during the last receive, with two seconds of its time left
    last = receive(aws.task_queue)
    killed_at = time.monotonic()
    with pytest.raises(SystemExit):
        deliver(aws.task_queue, last, seconds_left=2)

    # Then, while that invocation could still be running, the task is running
    task = client.get(status_url).json()
    assert (task["state"], task["attempts"]) == ("running", max_receives)

    # When the invocation's time is over, the message's visibility timeout passes, and SQS
    # moves it to the DLQ on the next receive
    time.sleep(max(0, killed_at + 2.1 - time.monotonic()))
    installed().sqs.release(aws.task_queue, last)
    assert receive(aws.task_queue) == []
    assert len(aws.receive_all(aws.task_dlq)) == 1

    # Then the API says the task is dead, and why
    response = client.get(status_url)
    assert response.status_code == 200
    task = response.json()
    assert task["state"] == "dead", task
    assert "worker stopped" in task["error"] and f"last attempt ({max_receives} of" in task["error"]

    # And the DLQ tool redrives it: the task is queued again and runs once
    redriven = offload_command("dlq", "redrive", "--queue", "tasks", obj=installed())
    assert redriven.exit_code == 0, redriven.output
    assert "tasks: 1 message(s) redriven" in redriven.stdout
    assert client.get(status_url).json()["state"] == "queued"
    deliver(aws.task_queue)
    task = client.get(status_url).json()
    assert (task["state"], task["result"]) == ("succeeded", "shipped A-1")
    assert _effects == ["A-1"]
    assert aws.receive_all(aws.task_dlq) == []
