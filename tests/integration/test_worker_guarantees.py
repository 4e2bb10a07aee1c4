"""Holes a hostile review found in the worker lifecycle, each shown through the real handlers.

- a body that fails validation but names a real task never touches that task (issue 8, case 10);
- a task's owner travels in its message, so a worker that writes first keeps it (case 11);
- a result too large for the task's record never repeats the effect (case 6);
- a duplicate waits for the lease of the delivery that holds its task (case 7);
- a claim-check pointer must be the payload bucket's key for that very task (case 9);
- a batch whose every record failed transiently is a partial failure, not an error (case 19).
"""

import json
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from botocore.exceptions import ClientError

from api.main import handler as api_handler
from offload.enqueue import TaskCall, enqueue
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.models import TaskMessage
from offload.registry import definition_of, task
from tests.integration.test_reliability_worker import (
    _error,
    deliver,
    email_call,
    failures,
    release,
)
from tests.integration.test_task_ownership import ALICE, BOB, as_caller, read
from tests.support import REGION, AwsStack, EventLoader, JsonLogs, installed
from workers.email import handler as email_handler
from workers.tasks import handler as tasks_handler

EFFECTS: list[str] = []
BIG_RESULT_CHARS = 500_000


@task(name="test_big_result")
def big_result(label: str) -> str:
    """A task whose effect is counted and whose result is larger than a DynamoDB item."""
    EFFECTS.append(label)
    return "x" * BIG_RESULT_CHARS


# ---------------------------------------------------------------- case 10: poison
def test_a_poison_message_naming_a_real_task_leaves_that_task_alone(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    # Given a real task X, and ahead of its message a body that fails validation (X's own
    # message plus an unknown field) whose attributes claim X with another kind
    (message,) = enqueue(installed(), [email_call()])
    (real,) = aws.receive_all(aws.email_queue, visibility=30)
    installed().sqs.delete_batch(aws.email_queue, [real])  # type: ignore[list-item]
    forged = json.loads(real["Body"]) | {"smuggled": "x"}
    attributes: Any = {
        "task_id": {"DataType": "String", "StringValue": str(message.task_id)},
        "kind": {"DataType": "String", "StringValue": "unknown"},
    }
    installed().sqs.send_raw(aws.email_queue, json.dumps(forged), attributes)
    installed().sqs.send_messages(aws.email_queue, [message])

    # When the worker receives both
    delivery = deliver(aws.email_queue, email_handler)

    # Then the poison is dead-lettered, and X still runs once, under its own kind
    assert len(delivery["messages"]) == 2 and failures(delivery) == []
    (dead,) = aws.receive_all(aws.email_dlq)
    assert "smuggled" in dead["Body"]
    assert len(aws.sent_emails()) == 1
    status = aws.task(message.task_id)
    assert status is not None
    assert (status["state"], status["kind"]) == ("succeeded", "send_email")
    (logged,) = json_logs.find("poison message sent to the DLQ")
    assert "not a valid task message" in logged["reason"]


# ---------------------------------------------------------------- case 11: owner
def test_the_owner_travels_in_the_message_when_the_status_write_fails(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given DynamoDB refuses the API's `queued` write (the worker will write first)
    def refuse(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
            "PutItem",
        )

    installed().clients.dynamodb.meta.events.register("before-call.dynamodb.PutItem", refuse)
    try:
        created = api_handler(
            as_caller(event("api-emails.json"), ALICE, "offload/tasks.write"), lambda_context
        )
    finally:
        installed().clients.dynamodb.meta.events.unregister("before-call.dynamodb.PutItem", refuse)
    assert created["statusCode"] == 202, created["body"]
    task_id = json.loads(created["body"])["task_id"]
    assert aws.task(task_id) is None

    # When the worker records the task
    assert failures(deliver(aws.email_queue, email_handler)) == []

    # Then it is still Alice's alone
    assert read(event, f"/tasks/{task_id}", ALICE, lambda_context)["statusCode"] == 200
    assert read(event, f"/tasks/{task_id}", BOB, lambda_context)["statusCode"] == 404


# ---------------------------------------------------------------- case 6: large results
def test_a_result_too_large_for_the_record_never_repeats_the_effect(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    EFFECTS.clear()
    definition = definition_of(big_result)
    (message,) = enqueue(installed(), [TaskCall(definition, definition.payload(label="once"))])
    installed().sqs.send_messages(aws.task_queue, [message, message])  # three copies in all

    # When the worker receives the copies, each failed one coming back, until none is left
    for _ in range(4):
        if not aws.receive_all(aws.task_queue):
            break
        release(aws.task_queue, deliver(aws.task_queue, tasks_handler))

    # Then the effect ran once and the task succeeded, its result replaced by a note
    assert EFFECTS == ["once"]
    status = aws.task(message.task_id)
    assert status is not None and status["state"] == "succeeded"
    result = json.loads(status["result"])
    assert result["result_omitted"] is True and result["bytes"] > BIG_RESULT_CHARS
    assert json_logs.find("task result too large to keep; replaced by a note")


# ---------------------------------------------------------------- case 7: late duplicate
def test_a_duplicate_waits_until_the_holders_lease_is_over(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    (message,) = enqueue(installed(), [email_call()])
    # Given another delivery holds the task (its claim leased for the 30 s left in its Lambda)
    claim = installed().tasks.claim(message.task_id, message.kind, attempts=1, lease_seconds=30)
    assert claim.taken

    # When a copy arrives
    copy = deliver(aws.email_queue, email_handler)

    # Then it sends nothing and waits for the holder's lease, not a short backoff: one receive
    # per holder, so that a duplicate never reaches the DLQ only because of the wait
    assert len(failures(copy)) == 1 and aws.sent_emails() == []
    waits = json_logs.find("task is running in another delivery")
    assert 30 <= waits[-1]["retry_in_seconds"] <= 31
    assert aws.receive_all(aws.email_queue) == []


# ---------------------------------------------------------------- case 9: pointers
@pytest.mark.parametrize(
    "pointer",
    [
        "s3://someone-elses-bucket/payloads/{task_id}.json",
        "s3://{bucket}/payloads/{other_id}.json",
        "s3://{bucket}/uploads/{task_id}/secret.csv",
    ],
)
def test_a_payload_pointer_must_be_this_tasks_key_in_the_payload_bucket(
    aws: AwsStack, pointer: str
) -> None:
    # Given a payload stored for another task, and a message for this task pointing elsewhere
    task_id, other_id = uuid4(), uuid4()
    bucket = aws.environment["OFFLOAD_PAYLOAD_BUCKET"]
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=bucket,
        Key=f"payloads/{other_id}.json",
        Body=json.dumps({"to": "bob@example.com", "subject": "Hi", "text": "stolen"}),
    )
    reference = pointer.format(bucket=bucket, task_id=task_id, other_id=other_id)
    message = TaskMessage(task_id=task_id, kind="send_email", payload_ref=reference)
    installed().sqs.send_messages(aws.email_queue, [message])

    # When the worker receives it, then nothing is read or sent: the task is dead, with why
    assert failures(deliver(aws.email_queue, email_handler)) == []
    assert aws.sent_emails() == []
    status = aws.task(task_id)
    assert status is not None and status["state"] == "dead"
    assert "payload pointer" in status["error"]


# ---------------------------------------------------------------- case 19: whole batch
def test_a_batch_whose_every_record_failed_transiently_is_a_partial_failure(
    aws: AwsStack,
) -> None:
    enqueue(installed(), [email_call(), email_call("carol@example.com")])

    def throttle(**_: Any) -> None:
        raise _error("Throttling")

    installed().clients.ses.meta.events.register("before-call.sesv2.SendEmail", throttle)
    try:
        response = boto3.client("sqs", region_name=REGION).receive_message(
            QueueUrl=aws.email_queue,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages = response["Messages"]
        context = LambdaContext(function_name="EmailWorker", timeout_seconds=30)
        # When every record of the batch is throttled, then the handler returns (no raise)
        result = email_handler(
            sqs_event(messages, installed().sqs.queue_arn(aws.email_queue)), context
        )  # type: ignore[arg-type]
    finally:
        installed().clients.ses.meta.events.unregister("before-call.sesv2.SendEmail", throttle)

    # ... with every record in batchItemFailures, so Lambda's Errors counts only crashes
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        m["MessageId"] for m in messages
    )
    assert all(
        aws.task(UUID(json.loads(m["Body"])["task_id"]))["state"] == "retrying" for m in messages
    )  # type: ignore[index]
