"""Worker reliability against moto: duplicates, transient and permanent errors, the time guard,
a dead worker's claim, correlation ids in logs, and large payloads (claim check).

Records reach the real handlers as the exact SQS events Lambda builds from received messages.
"""

import json
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

from example_app.emails import send_email
from example_app.notifications import write_log
from offload.aws.errors import transient_errors
from offload.enqueue import TaskCall, enqueue
from offload.errors import EmailRejectedError, TransientTaskError
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.models import TaskMessage
from offload.registry import definition_of
from tests.support import REGION, AwsStack, JsonLogs, compose, installed
from workers.email import handler as email_handler
from workers.tasks import handler as tasks_handler


def _error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendEmail",
    )


def email_call(to: str = "bob@example.com", **body: Any) -> TaskCall:
    definition = definition_of(send_email)
    body = body or {"text": "Hello"}
    return TaskCall(definition, definition.payload(to=to, subject="Hi", **body))


def deliver(queue_url: str, handler: Any, context: Any | None = None) -> dict[str, Any]:
    """Receive what is visible (up to 10) and hand it to the handler as Lambda would."""
    response = boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=30,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    messages = response.get("Messages", [])
    assert messages, "nothing to deliver"
    context = context or LambdaContext(function_name="EmailWorker", timeout_seconds=30)
    try:
        result: dict[str, Any] = handler(
            sqs_event(messages, installed().sqs.queue_arn(queue_url)), context
        )  # type: ignore[arg-type]
    except BatchProcessingError:
        # Every record failed: Powertools fails the invocation and Lambda keeps them all.
        result = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
    # ... and, as Lambda does, delete the records the handler did not report as failed
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    done = [m for m in messages if m["MessageId"] not in failed]
    installed().sqs.delete_batch(queue_url, done)  # type: ignore[arg-type]
    return {"result": result, "messages": messages}


def release(queue_url: str, delivery: dict[str, Any]) -> None:
    """Make a delivery's failed messages visible again (as if their backoff had passed)."""
    failed = set(failures(delivery))
    installed().sqs.release(
        queue_url, [m for m in delivery["messages"] if m["MessageId"] in failed]
    )


def failures(delivery: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in delivery["result"]["batchItemFailures"]]


@pytest.fixture
def ses_faults(aws: AwsStack) -> Iterator[list[ClientError]]:
    """Errors to raise from the next SES SendEmail calls (a botocore hook on the client)."""
    queued: list[ClientError] = []

    def hook(**_: Any) -> None:
        if queued:
            raise queued.pop(0)

    installed().clients.ses.meta.events.register("before-call.sesv2.SendEmail", hook)
    yield queued
    installed().clients.ses.meta.events.unregister("before-call.sesv2.SendEmail", hook)


# ---------------------------------------------------------------- classification
@pytest.mark.parametrize(
    "error",
    [
        _error("Throttling"),
        _error("TooManyRequestsException", 429),
        _error("InternalFailure", 500),
        _error("SomethingNew", 503),
        EndpointConnectionError(endpoint_url="https://email.us-east-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com"),
    ],
)
def test_throttling_5xx_timeouts_and_connection_errors_are_transient(error: Exception) -> None:
    with pytest.raises(TransientTaskError), transient_errors("SES SendEmail"):
        raise error


def test_message_rejected_is_permanent(aws: AwsStack, ses_faults: list[ClientError]) -> None:
    from offload.aws import ses

    ses_faults.append(_error("MessageRejected"))
    with pytest.raises(EmailRejectedError, match="MessageRejected"):
        ses.send_email(
            installed().clients.ses,
            sender="a@example.com",
            to="b@example.com",
            subject="s",
            text="t",
            html=None,
            needs_seconds=0,
        )


# ---------------------------------------------------------------- duplicates
def test_a_message_delivered_twice_sends_one_email(aws: AwsStack) -> None:
    # Given: one task whose message is on the queue twice
    (message,) = enqueue(installed(), [email_call()])
    installed().sqs.send_messages(aws.email_queue, [message])

    # When: both copies arrive in one batch
    delivery = deliver(aws.email_queue, email_handler)

    # Then: one email, the task succeeded, both records processed (deleted)
    assert len(delivery["messages"]) == 2
    assert failures(delivery) == []
    assert len(aws.sent_emails()) == 1
    assert aws.task(message.task_id)["state"] == "succeeded"  # type: ignore[index]


# ---------------------------------------------------------------- transient errors
@pytest.fixture
def slow_retries(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backoff of 100-200 s after the first receive (composed before ses_faults hooks SES)."""
    monkeypatch.setenv("OFFLOAD_RETRY_BASE_SECONDS", "200")
    compose(monkeypatch)


def test_throttled_task_retries_with_backoff_then_succeeds_once(
    aws: AwsStack, slow_retries: None, ses_faults: list[ClientError]
) -> None:
    (message,) = enqueue(installed(), [email_call()])
    ses_faults.append(_error("Throttling"))

    # When: the first delivery is throttled
    first = deliver(aws.email_queue, email_handler)

    # Then: the record failed, the task is retrying with its attempt, and the message is hidden
    # for the backoff (exponential from the receive count, 100-200 s here)
    assert failures(first) == [first["messages"][0]["MessageId"]]
    status = aws.task(message.task_id)
    assert status is not None
    assert (status["state"], status["attempts"]) == ("retrying", "1")
    assert "Throttling" in status["error"]
    assert installed().sqs.counts(aws.email_queue)["ApproximateNumberOfMessagesNotVisible"] == 1
    assert (
        not boto3.client("sqs", region_name=REGION)
        .receive_message(QueueUrl=aws.email_queue)
        .get("Messages")
    )

    # When: the backoff has passed and the message comes back
    release(aws.email_queue, first)
    second = deliver(aws.email_queue, email_handler)

    # Then: one email, succeeded on attempt 2
    assert failures(second) == []
    assert len(aws.sent_emails()) == 1
    status = aws.task(message.task_id)
    assert (status["state"], status["attempts"]) == ("succeeded", "2")  # type: ignore[index]


# ---------------------------------------------------------------- permanent errors
def test_rejected_email_is_dead_at_once_with_the_reason(
    aws: AwsStack, ses_faults: list[ClientError], json_logs: JsonLogs
) -> None:
    (message,) = enqueue(installed(), [email_call()])
    ses_faults.append(_error("MessageRejected"))

    delivery = deliver(aws.email_queue, email_handler)

    # Then: processed (deleted, no retry), dead with the reason, in the DLQ with the reason
    assert failures(delivery) == []
    status = aws.task(message.task_id)
    assert status is not None and status["state"] == "dead"
    assert "MessageRejected" in status["error"]
    (dead,) = aws.receive_all(aws.email_dlq)
    assert dead["MessageAttributes"]["task_id"]["StringValue"] == str(message.task_id)
    assert "MessageRejected" in dead["MessageAttributes"]["error"]["StringValue"]
    assert sum(installed().sqs.counts(aws.email_queue).values()) == 0
    (logged,) = json_logs.find("task failed permanently; sent to the DLQ without retry")
    assert logged["level"] == "ERROR" and "MessageRejected" in logged["reason"]
    assert logged["task_id"] == str(message.task_id)


def test_each_copy_of_a_poison_message_is_dead_lettered_on_its_first_receive(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    task_id = uuid4()
    body = json.dumps({"task_id": str(task_id), "kind": "write_log", "nonsense": 1})
    for _ in range(2):
        installed().sqs.send_raw(aws.task_queue, body, {})

    delivery = deliver(aws.task_queue, tasks_handler)

    # Then no retry: both copies are in the DLQ with the reason, and no task was recorded on
    # the word of a message that failed validation
    assert failures(delivery) == []
    assert len(aws.receive_all(aws.task_dlq)) == 2
    assert aws.task(task_id) is None
    logged = json_logs.find("poison message sent to the DLQ")
    assert len(logged) == 2 and "not a valid task message" in logged[0]["reason"]
    assert logged[0]["claimed_task_id"] == str(task_id)


def test_a_poison_message_with_a_malformed_task_id_attribute_is_dead_lettered(
    aws: AwsStack,
) -> None:
    # Given a body that is not a task message, with a task_id attribute that is not a UUID
    attributes: Any = {"task_id": {"DataType": "String", "StringValue": "../../etc/passwd"}}
    installed().sqs.send_raw(aws.task_queue, "not json", attributes)

    delivery = deliver(aws.task_queue, tasks_handler)

    # Then it is dead-lettered at once, not retried until the redrive
    assert failures(delivery) == []
    (dead,) = aws.receive_all(aws.task_dlq)
    assert dead["Body"] == "not json"
    assert "not a valid task message" in dead["MessageAttributes"]["error"]["StringValue"]


def test_a_poison_message_keeps_its_attributes_in_the_dlq(aws: AwsStack) -> None:
    task_id = uuid4()
    attributes: Any = {
        "task_id": {"DataType": "String", "StringValue": str(task_id)},
        "kind": {"DataType": "String", "StringValue": "send_email"},
    }
    installed().sqs.send_raw(aws.email_queue, "{broken", attributes)

    assert failures(deliver(aws.email_queue, email_handler)) == []

    # Then the operator sees what it claimed to be; the task it names is not touched
    (dead,) = aws.receive_all(aws.email_dlq)
    assert dead["MessageAttributes"]["task_id"]["StringValue"] == str(task_id)
    assert dead["MessageAttributes"]["kind"]["StringValue"] == "send_email"
    assert aws.task(task_id) is None


# ---------------------------------------------------------------- time guard
def test_near_the_timeout_records_go_back_untouched(aws: AwsStack) -> None:
    enqueue(installed(), [email_call(), email_call("carol@example.com")])
    nearly_out = LambdaContext(function_name="EmailWorker", timeout_seconds=2)

    delivery = deliver(aws.email_queue, email_handler, nearly_out)

    assert sorted(failures(delivery)) == sorted(m["MessageId"] for m in delivery["messages"])
    assert aws.sent_emails() == []
    # Back after the first backoff (1-2 s: the receive counted), not the visibility timeout
    assert installed().sqs.counts(aws.email_queue)["ApproximateNumberOfMessages"] == 0
    time.sleep(2.1)
    assert installed().sqs.counts(aws.email_queue)["ApproximateNumberOfMessages"] == 2


# ---------------------------------------------------------------- a worker that died
def test_a_dead_workers_claim_expires_at_its_timeout(aws: AwsStack) -> None:
    (message,) = enqueue(installed(), [email_call()])
    # Given: a worker claimed the task (leased for the 2 s left in its Lambda) and died
    claim = installed().tasks.claim(message.task_id, message.kind, attempts=1, lease_seconds=2)
    assert claim.taken

    # When: the message comes back while the claim is held
    held = deliver(aws.email_queue, email_handler)

    # Then: it waits (no email), and after the dead worker's timeout the task runs once
    assert len(failures(held)) == 1 and aws.sent_emails() == []
    time.sleep(2.2)
    release(aws.email_queue, held)
    ran = deliver(aws.email_queue, email_handler)
    assert failures(ran) == []
    assert len(aws.sent_emails()) == 1
    assert aws.task(message.task_id)["state"] == "succeeded"  # type: ignore[index]


# ---------------------------------------------------------------- correlation ids
def test_every_log_line_of_a_task_carries_its_correlation_id_and_no_other(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    definition = definition_of(write_log)
    (first,) = enqueue(
        installed(), [TaskCall(definition, {"message": "one"})], correlation_id="corr-123"
    )
    (second,) = enqueue(
        installed(), [TaskCall(definition, {"message": "two"})], correlation_id=None
    )

    deliver(aws.task_queue, tasks_handler)

    lines = [
        r
        for r in json_logs.records
        if r.get("task_id") in {str(first.task_id), str(second.task_id)}
    ]
    first_lines = [r for r in lines if r["task_id"] == str(first.task_id)]
    second_lines = [r for r in lines if r["task_id"] == str(second.task_id)]
    assert {r["message"] for r in first_lines} >= {"task started", "one", "task succeeded"}
    assert all(r.get("correlation_id") == "corr-123" for r in first_lines)
    assert second_lines and all("correlation_id" not in r for r in second_lines)
    # and nothing leaks past the record
    assert all("task_id" not in r for r in json_logs.records if r not in lines)


# ---------------------------------------------------------------- large payloads
def test_a_large_payload_travels_through_s3_and_is_loaded_by_the_worker(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setenv("OFFLOAD_MAX_MESSAGE_BYTES", "2048")
    compose(monkeypatch)
    text = "x" * 50_000
    (message,) = enqueue(installed(), [email_call(text=None, html=f"<p>{text}</p>")])

    # Then: the message carries a pointer, the payload is in the payload bucket
    (queued,) = aws.receive_all(aws.email_queue)
    body = TaskMessage.model_validate_json(queued["Body"])
    assert body.payload == {} and body.payload_ref is not None
    bucket = aws.environment["OFFLOAD_PAYLOAD_BUCKET"]
    assert body.payload_ref == f"s3://{bucket}/payloads/{message.task_id}.json"
    stored = boto3.client("s3", region_name=REGION).get_object(
        Bucket=bucket, Key=f"payloads/{message.task_id}.json"
    )
    assert json.loads(stored["Body"].read())["html"] == f"<p>{text}</p>"

    # When: the worker runs it, the email has the whole body
    assert failures(deliver(aws.email_queue, email_handler)) == []
    (email,) = aws.sent_emails()
    assert email.body == f"<p>{text}</p>"


def test_a_pointer_to_a_missing_payload_is_dead(aws: AwsStack) -> None:
    task_id = uuid4()
    bucket = aws.environment["OFFLOAD_PAYLOAD_BUCKET"]
    pointer = TaskMessage(
        task_id=task_id, kind="send_email", payload_ref=f"s3://{bucket}/payloads/{task_id}.json"
    )
    installed().sqs.send_messages(aws.email_queue, [pointer])

    assert failures(deliver(aws.email_queue, email_handler)) == []

    status = aws.task(UUID(str(task_id)))
    assert status is not None and status["state"] == "dead"
    assert "does not exist" in status["error"]
