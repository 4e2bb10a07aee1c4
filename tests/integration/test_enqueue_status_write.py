"""A task SQS accepted is durable, even when its "queued" status write fails.

Only a task whose id cannot vouch for it (an Idempotency-Key's, derived from the key) gets a
`queued` record from the API; other ids answer for their tasks (offload.task_ids).
"""

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import boto3
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from api.main import app
from offload.local.lambda_runtime import sqs_event
from tests.support import REGION, AwsStack, JsonLogs, compose, installed, task_message
from workers import email as email_worker

THROTTLED = "before-parameter-build.dynamodb.UpdateItem"
IDEMPOTENT = {"Idempotency-Key": "order-9"}


def throttle(params: dict[str, Any], **_: Any) -> None:
    if params.get("TableName") == installed().settings.tasks_table:
        code = "ProvisionedThroughputExceededException"
        raise ClientError({"Error": {"Code": code, "Message": "slow down"}}, "UpdateItem")


@pytest.fixture
def tasks_table_refuses_writes(aws: AwsStack) -> Iterator[None]:
    """DynamoDB throttles every write on the tasks table (as during a throttling storm)."""
    dynamodb = installed().clients.dynamodb
    dynamodb.meta.events.register(THROTTLED, throttle)
    try:
        yield
    finally:
        dynamodb.meta.events.unregister(THROTTLED, throttle)


def test_a_failed_status_write_after_sqs_took_the_task_still_answers_202(
    aws: AwsStack, tasks_table_refuses_writes: None, json_logs: JsonLogs
) -> None:
    # Given a tasks table that refuses the "queued" write, when a client posts an email with
    # an Idempotency-Key
    with TestClient(app) as client:
        response = client.post(
            "/emails",
            json={"to": "hal@example.com", "subject": "Hi", "text": "Still sent"},
            headers=IDEMPOTENT,
        )

    # Then it is accepted: the task is on SQS (a retry by the client would duplicate it)
    assert response.status_code == 202, response.text
    task_id = UUID(response.json()["task_id"])
    [message] = aws.receive_all(aws.email_queue)
    assert task_message(message).task_id == task_id
    # And nothing is recorded yet, which a structured warning says
    assert aws.task(task_id) is None
    [warning] = json_logs.find(
        "task queued but its status was not recorded; the worker will record it"
    )
    assert warning["level"] == "WARNING"
    assert (warning["task_id"], warning["kind"]) == (str(task_id), "send_email")
    assert "ProvisionedThroughputExceededException" in warning["reason"]


def test_the_worker_creates_the_missing_record_and_sends_the_email(
    aws: AwsStack, tasks_table_refuses_writes: None, lambda_context: Any
) -> None:
    # Given a task queued while its status write failed
    with TestClient(app) as client:
        response = client.post(
            "/emails",
            json={"to": "ivy@example.com", "subject": "Hi", "text": "Recorded later"},
            headers=IDEMPOTENT,
        )
    assert response.status_code == 202, response.text
    assert aws.task(response.json()["task_id"]) is None
    installed().clients.dynamodb.meta.events.unregister(THROTTLED, throttle)  # DynamoDB is back
    task_id = response.json()["task_id"]
    messages = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=aws.email_queue,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )["Messages"]

    # When the EmailWorker runs it
    event = sqs_event(messages, installed().sqs.queue_arn(aws.email_queue))
    result = email_worker.handler(event, lambda_context)

    # Then the task gets its record, succeeded, and the email went out once
    assert result == {"batchItemFailures": []}
    record = aws.task(task_id)
    assert record is not None
    assert (record["state"], record["kind"], record["attempts"]) == ("succeeded", "send_email", "1")
    assert [m.destinations["ToAddresses"] for m in aws.sent_emails()] == [["ivy@example.com"]]


def test_sqs_refusing_the_task_is_still_503_when_the_status_write_fails_too(
    aws: AwsStack, tasks_table_refuses_writes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a queue URL SQS does not know, and a tasks table refusing writes
    monkeypatch.setenv("OFFLOAD_EMAIL_QUEUE_URL", aws.email_queue + "-missing")

    compose(monkeypatch)

    with TestClient(app) as client:
        response = client.post("/email/jo@example.com")

    # Then the client is told to retry: nothing was queued
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
