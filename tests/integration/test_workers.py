"""The worker Lambda handlers against moto: SQS events in, SES emails, task status and DLQ out."""

import json
from typing import Any
from uuid import UUID

import boto3
import pytest

from example_app.notifications import write_log
from offload.enqueue import TaskCall, enqueue
from offload.errors import TransientTaskError, UnprocessableInputError
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.registry import definition_of, task
from tests.support import REGION, SENDER, AwsStack, EventLoader, JsonLogs, compose, installed
from workers import email as email_worker
from workers import tasks as task_worker

_flaky_calls: dict[str, int] = {}


@task(name="tests_flaky")
def flaky(key: str, failures: int) -> str:
    """Fails with a transient error `failures` times per key, then succeeds."""
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] <= failures:
        raise TransientTaskError("SES Throttling: Maximum sending rate exceeded")
    return f"done after {_flaky_calls[key]}"


@task(name="tests_unprocessable")
def unprocessable(reason: str) -> None:
    """A task whose input can never succeed (say, a file that is not an image)."""
    raise UnprocessableInputError(reason)


def queue_arn(queue_url: str) -> str:
    sqs = boto3.client("sqs", region_name=REGION)
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def received_event(queue_url: str) -> dict[str, Any]:
    """Receive what is on the queue and wrap it the way Lambda's SQS trigger does."""
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    assert messages, "expected messages on the queue"
    return sqs_event(messages, queue_arn(queue_url))  # type: ignore[arg-type]


def task_id_of(record: dict[str, Any]) -> str:
    return str(json.loads(record["body"])["task_id"])


def emf_metrics(stdout: str) -> dict[str, float]:
    """Sum of every metric in the EMF blobs Powertools Metrics printed."""
    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for definition in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = blob[definition["Name"]]
            values = value if isinstance(value, list) else [value]
            totals[definition["Name"]] = totals.get(definition["Name"], 0) + sum(values)
    return totals


# ------------------------------------------------------------------ TaskWorker, events/ in


def test_task_worker_event_runs_good_records_and_dead_letters_poison(
    aws: AwsStack,
    event: EventLoader,
    lambda_context: LambdaContext,
    json_logs: JsonLogs,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the sample batch: two write_log tasks, a non-JSON body, an unknown kind and a
    # payload that fails validation
    batch = event("sqs-task-worker.json")
    good, not_json, unknown, invalid = batch["Records"][:2], *batch["Records"][2:]

    # When the TaskWorker handles it
    response = task_worker.handler(batch, lambda_context)

    # Then no record fails the batch: the poison ones were moved to the DLQ at once
    assert response == {"batchItemFailures": []}
    for record in good:
        status = aws.task(task_id_of(record))
        assert status is not None
        assert (status["state"], status["attempts"]) == ("succeeded", "1")
    # write_log's structured log line is the seed's log.txt (the records ran at once: in any
    # order)
    written = [r for r in json_logs.records if r.get("event") == "write_log"]
    assert sorted(r["message"] for r in written) == [
        "Notification sent to alice@example.com",
        "Notification sent to dave@example.net",
    ]
    dead_letters = aws.receive_all(aws.task_dlq)
    assert sorted(m["Body"] for m in dead_letters) == sorted(
        r["body"] for r in (not_json, unknown, invalid)
    )
    for message in dead_letters:
        assert message["MessageAttributes"]["error"]["StringValue"]
    for record in (unknown, invalid):
        status = aws.task(task_id_of(record))
        assert status is not None and status["state"] == "dead"
    assert "no task named 'delete_everything'" in aws.task(task_id_of(unknown))["error"]  # type: ignore[index]
    assert "message" in aws.task(task_id_of(invalid))["error"]  # type: ignore[index]
    # And every poison record is logged as an error with its message id
    errors = [r for r in json_logs.records if r["level"] == "ERROR"]
    for record in (not_json, unknown, invalid):
        assert any(e.get("message_id") == record["messageId"] for e in errors), record
    # And EMF metrics count them
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["TasksSucceeded"] == 2
    assert metrics["TasksDead"] == 2  # unknown task, invalid arguments
    assert metrics["PoisonMessages"] == 1  # not a task message: no task to count
    # Nothing is left on the queue itself
    assert aws.receive_all(aws.task_queue) == []


def test_send_email_on_the_task_queue_is_refused(
    aws: AwsStack, event: EventLoader, lambda_context: LambdaContext
) -> None:
    # A send_email message that reached the wrong queue is never run by the wrong worker.
    batch = event("sqs-email-worker.json")
    batch["Records"] = batch["Records"][:1]

    response = task_worker.handler(batch, lambda_context)

    assert response == {"batchItemFailures": []}
    assert aws.sent_emails() == []
    status = aws.task(task_id_of(batch["Records"][0]))
    assert status is not None and status["state"] == "dead"
    assert "email queue" in status["error"]
    assert len(aws.receive_all(aws.task_dlq)) == 1


def test_a_task_whose_input_can_never_succeed_fails_without_retry_or_dlq(
    aws: AwsStack, lambda_context: LambdaContext, json_logs: JsonLogs
) -> None:
    # Given a task on the TaskQueue whose input can never succeed
    definition = definition_of(unprocessable)
    payload = definition.payload(reason="the image is not a PNG")
    (message,) = enqueue(installed(), [TaskCall(definition, payload)])

    # When the TaskWorker runs it
    response = task_worker.handler(received_event(aws.task_queue), lambda_context)

    # Then the record is done with (no retry), the task failed with the reason, and nothing
    # went to the DLQ (no alarm: the system is fine, the user is told why)
    assert response == {"batchItemFailures": []}
    status = aws.task(message.task_id)
    assert status is not None
    assert (status["state"], status["error"]) == ("failed", "the image is not a PNG")
    assert aws.receive_all(aws.task_dlq) == []
    [line] = json_logs.find("task input can never succeed; failed")
    assert (line["level"], line["reason"]) == ("WARNING", "the image is not a PNG")


# ------------------------------------------------------------------ EmailWorker, events/ in


def test_email_worker_event_sends_good_records_and_dead_letters_poison(
    aws: AwsStack, event: EventLoader, lambda_context: LambdaContext, json_logs: JsonLogs
) -> None:
    batch = event("sqs-email-worker.json")
    good, (invalid, not_json) = batch["Records"][:2], batch["Records"][2:]

    response = email_worker.handler(batch, lambda_context)

    assert response == {"batchItemFailures": []}
    # Two emails, from the configured sender, as the payloads say
    sent = aws.sent_emails()
    assert sorted(m.destinations["ToAddresses"][0] for m in sent) == [
        "bob@example.org",
        "carol@example.com",
    ]
    assert {m.source for m in sent} == {SENDER}
    by_to = {m.destinations["ToAddresses"][0]: m for m in sent}
    assert by_to["bob@example.org"].subject == "Hello from Offload"
    assert "durable background task" in by_to["bob@example.org"].body
    for record in good:
        status = aws.task(task_id_of(record))
        assert status is not None and status["state"] == "succeeded"
        assert json.loads(status["result"])["ses_message_id"]
    # The invalid address and the broken JSON are in the DLQ, logged with their message ids
    dead = aws.receive_all(aws.email_dlq)
    assert sorted(m["Body"] for m in dead) == sorted([invalid["body"], not_json["body"]])
    invalid_status = aws.task(task_id_of(invalid))
    assert invalid_status is not None and invalid_status["state"] == "dead"
    assert "to" in invalid_status["error"]
    errors = [r for r in json_logs.records if r["level"] == "ERROR"]
    for record in (invalid, not_json):
        assert any(e.get("message_id") == record["messageId"] for e in errors)


def test_duplicate_delivery_sends_one_email(
    aws: AwsStack, event: EventLoader, lambda_context: LambdaContext, json_logs: JsonLogs
) -> None:
    # Given a good email record, delivered twice (SQS is at-least-once)
    batch = event("sqs-email-worker.json")
    batch["Records"] = batch["Records"][:1]

    first = email_worker.handler(batch, lambda_context)
    second = email_worker.handler(
        event("sqs-email-worker.json") | {"Records": batch["Records"]}, lambda_context
    )

    assert first == second == {"batchItemFailures": []}
    assert len(aws.sent_emails()) == 1
    assert json_logs.find("task already finished; duplicate delivery skipped")
    status = aws.task(task_id_of(batch["Records"][0]))
    assert status is not None and status["state"] == "succeeded"


def test_unverified_sender_is_a_clear_permanent_error(
    aws: AwsStack, event: EventLoader, lambda_context: LambdaContext, json_logs: JsonLogs
) -> None:
    # Given SES does not know the sender
    boto3.client("sesv2", region_name=REGION).delete_email_identity(EmailIdentity=SENDER)
    batch = event("sqs-email-worker.json")
    batch["Records"] = batch["Records"][:1]
    record = batch["Records"][0]

    response = email_worker.handler(batch, lambda_context)

    # Then nothing is sent, the task is dead with an actionable error, and it is not retried
    assert response == {"batchItemFailures": []}
    assert aws.sent_emails() == []
    status = aws.task(task_id_of(record))
    assert status is not None and status["state"] == "dead"
    assert "MessageRejected" in status["error"]
    assert f"Verify the sender identity '{SENDER}'" in status["error"]
    [logged] = [r for r in json_logs.records if r["level"] == "ERROR"]
    assert "Verify the sender identity" in logged["exception"]
    assert (logged["task_id"], logged["kind"], logged["attempt"]) == (
        task_id_of(record),
        "send_email",
        1,
    )
    assert [m["Body"] for m in aws.receive_all(aws.email_dlq)] == [record["body"]]


# ------------------------------------------------------------------ retries, real messages


def enqueue_flaky(key: str, failures: int, *, with_good_task: bool = True) -> UUID:
    """Queue a flaky task, and a write_log beside it so the batch only partly fails."""
    definition = definition_of(flaky)
    calls = [TaskCall(definition, definition.payload(key=key, failures=failures))]
    if with_good_task:
        log = definition_of(write_log)
        calls.append(TaskCall(log, log.payload(f"beside {key}")))
    return enqueue(installed(), calls)[0].task_id


def record_of(batch: dict[str, Any], task_id: UUID) -> dict[str, Any]:
    [record] = [r for r in batch["Records"] if task_id_of(r) == str(task_id)]
    return record


def test_transient_failure_is_retried_with_the_record_reported(
    aws: AwsStack,
    lambda_context: LambdaContext,
    json_logs: JsonLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Retry at once, so the test can receive the message again.
    monkeypatch.setenv("OFFLOAD_RETRY_BASE_SECONDS", "0")

    compose(monkeypatch)
    task_id = enqueue_flaky("retry-once", failures=1)

    # First delivery: a transient error
    first_event = received_event(aws.task_queue)
    first = task_worker.handler(first_event, lambda_context)

    message_id = record_of(first_event, task_id)["messageId"]
    assert first == {"batchItemFailures": [{"itemIdentifier": message_id}]}
    status = aws.task(task_id)
    assert status is not None
    assert (status["state"], status["attempts"]) == ("retrying", "1")
    assert "Throttling" in status["error"]
    [failure] = json_logs.find("task failed; will retry")
    assert (failure["task_id"], failure["kind"], failure["attempt"]) == (
        str(task_id),
        "tests_flaky",
        1,
    )
    assert "exception" in failure

    # Second delivery (the message came back): it succeeds
    second_event = received_event(aws.task_queue)
    assert [r["messageId"] for r in second_event["Records"]] == [message_id]
    assert second_event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    second = task_worker.handler(second_event, lambda_context)

    assert second == {"batchItemFailures": []}
    status = aws.task(task_id)
    assert status is not None
    assert (status["state"], status["attempts"]) == ("succeeded", "2")
    assert "error" not in status
    assert json.loads(status["result"]) == "done after 2"


def test_retry_backs_off_with_the_message_hidden(
    aws: AwsStack, lambda_context: LambdaContext
) -> None:
    task_id = enqueue_flaky("backoff", failures=5)

    response = task_worker.handler(received_event(aws.task_queue), lambda_context)

    assert len(response["batchItemFailures"]) == 1
    # The visibility timeout was set to the backoff (1-2 s for the first attempt), not 180 s:
    # the message is hidden now, and not dead-lettered.
    assert aws.receive_all(aws.task_queue) == []
    assert aws.receive_all(aws.task_dlq) == []
    status = aws.task(task_id)
    assert status is not None and status["state"] == "retrying"


def test_near_the_timeout_records_go_back_untouched(aws: AwsStack) -> None:
    task_id = enqueue_flaky("timeout", failures=0, with_good_task=False)
    batch = received_event(aws.task_queue)

    # Less time left than the per-record budget (20 s by default): every record goes back, as
    # a partial batch failure (not an invocation error: Errors counts crashes only)
    response = task_worker.handler(batch, LambdaContext("offload-dev-TaskWorker", 2))
    assert len(response["batchItemFailures"]) == len(batch["Records"])

    # Untouched: no record written (the task reads as queued by its id)
    assert aws.task(task_id) is None
    # Hidden for the first backoff (1-2 s: the receive counted), not the 180 s visibility
    # timeout, and not dead-lettered
    assert aws.receive_all(aws.task_queue) == []
    assert aws.receive_all(aws.task_dlq) == []


def test_a_batch_where_every_record_fails_transiently_reports_each_record(
    aws: AwsStack, lambda_context: LambdaContext
) -> None:
    task_id = enqueue_flaky("all-fail", failures=5, with_good_task=False)
    batch = received_event(aws.task_queue)

    response = task_worker.handler(batch, lambda_context)

    assert response == {
        "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in batch["Records"]]
    }

    status = aws.task(task_id)
    assert status is not None and status["state"] == "retrying"


def test_a_worker_runs_on_the_offload_it_is_given(
    aws: AwsStack, lambda_context: LambdaContext
) -> None:
    # Given the TaskWorker on an Offload of its own, with its own settings, beside the one the
    # rest of this process runs on (nothing is shared between them: no module-level state)
    from offload.settings import Settings
    from offload.wiring import build

    own = build(Settings(max_receive_count=1))
    shared = installed()
    calls: dict[str, int] = {"own": 0, "shared": 0}

    def counter(name: str) -> Any:
        return lambda **_: calls.__setitem__(name, calls[name] + 1)

    own.clients.dynamodb.meta.events.register("before-call.dynamodb.*", counter("own"))
    shared.clients.dynamodb.meta.events.register("before-call.dynamodb.*", counter("shared"))
    definition = definition_of(flaky)
    (message,) = enqueue(shared, [TaskCall(definition, {"key": "own-offload", "failures": 1})])
    calls["shared"] = 0

    # When it runs a task that fails transiently, on its first receive
    response = task_worker.handler.using(own)(received_event(aws.task_queue), lambda_context)

    # Then it read and wrote through its own clients only, with its own settings: the first
    # receive is the last one (max_receive_count=1), so the task is dead, not retrying
    assert len(response["batchItemFailures"]) == 1
    assert calls["own"] > 0 and calls["shared"] == 0
    status = aws.task(message.task_id)
    assert status is not None and status["state"] == "dead"
