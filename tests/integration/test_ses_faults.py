"""SES failing inside the call: 5xx answers, answers slower than the read timeout, throttling.

SES is a real HTTP endpoint here: a small server on 127.0.0.1 that counts the SendEmail requests
it receives and answers with the fault; the EmailWorker's SES client reaches it through the
standard AWS_ENDPOINT_URL_SESV2 variable. When SES "recovers", the variable is removed and the
same client talks to moto's SES again. Everything else (SQS, DynamoDB) is the template's stack
in moto, and the worker is fed real messages received from the EmailQueue.
"""

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from example_app.emails import send_email
from offload.enqueue import TaskCall, enqueue
from offload.local.lambda_runtime import LambdaContext
from offload.registry import definition_of
from tests.integration.test_workers import received_event
from tests.support import REGION, AwsStack, JsonLogs, compose, installed
from workers import email as email_worker

SEND_EMAIL_PATH = "/v2/email/outbound-emails"


class SesOutage:
    """An SES endpoint on loopback that fails every SendEmail the way it is told to."""

    def __init__(self) -> None:
        self.requests = 0
        self.status = 500
        self.error_type = "InternalFailure"
        self.delay = 0.0
        self.released = threading.Event()  # ends a slow answer early when the test is over
        self._lock = threading.Lock()
        outage = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == SEND_EMAIL_PATH:
                    with outage._lock:
                        outage.requests += 1
                if outage.delay:
                    outage.released.wait(outage.delay)
                body = json.dumps({"message": f"injected {outage.error_type}"}).encode()
                with contextlib.suppress(OSError):  # the client may have given up already
                    self.send_response(outage.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("x-amzn-ErrorType", outage.error_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def throttle(self) -> None:
        self.status, self.error_type, self.delay = 429, "TooManyRequestsException", 0.0

    def answer_after(self, seconds: float) -> None:
        self.delay = seconds


@pytest.fixture
def ses_outage(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[SesOutage]:
    """SES answers 500 (until told otherwise) to every SendEmail of the worker's client."""
    outage = SesOutage()
    outage.thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", outage.url)
    compose(monkeypatch)
    try:
        yield outage
    finally:
        monkeypatch.delenv("AWS_ENDPOINT_URL_SESV2", raising=False)  # before `aws` cleans up
        compose(monkeypatch)
        outage.released.set()
        outage.server.shutdown()
        outage.server.server_close()


def ses_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    """SES answers again: the worker's SES client goes back to moto."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_SESV2")
    compose(monkeypatch)


def retry_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_RETRY_BASE_SECONDS", "0")
    compose(monkeypatch)


def enqueue_email(to: str = "dora@example.com", count: int = 1) -> UUID:
    definition = definition_of(send_email)
    payload = definition.payload(to=to, subject="Your report", text="It is ready.")
    return enqueue(installed(), [TaskCall(definition, payload) for _ in range(count)])[0].task_id


def handle(event: dict[str, Any], context: LambdaContext) -> list[str]:
    """Run the EmailWorker's handler; returns the message ids it reported as failed."""
    try:
        response = email_worker.handler(event, context)
    except BatchProcessingError:  # every record of the batch failed
        return [record["messageId"] for record in event["Records"]]
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def budget_seconds() -> float:
    return installed().settings.record_time_budget_ms / 1000


# ---------------------------------------------------------------- one attempt per delivery


def test_a_5xx_from_ses_is_one_request_and_the_queue_sends_the_email_once(
    aws: AwsStack,
    ses_outage: SesOutage,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an email task, and SES answering 500 to every SendEmail
    retry_at_once(monkeypatch)
    task_id = enqueue_email()

    # When the EmailWorker gets its message
    event = received_event(aws.email_queue)
    started = time.monotonic()
    failed = handle(event, lambda_context)
    elapsed = time.monotonic() - started

    # Then SES received exactly one request (no SDK retry of a call that has no idempotency
    # token), the record failed and goes back to the queue, and the task is `retrying`
    assert ses_outage.requests == 1
    assert failed == [event["Records"][0]["messageId"]]
    assert elapsed < budget_seconds()
    status = aws.task(task_id)
    assert status is not None and status["state"] == "retrying"
    assert "InternalFailure" in status["error"]
    assert aws.sent_emails() == []

    # When SES recovers and the queue delivers the message again
    ses_recovers(monkeypatch)
    again = received_event(aws.email_queue)
    assert again["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert handle(again, lambda_context) == []

    # Then the email went out exactly once, through the queue's retry
    assert len(aws.sent_emails()) == 1
    assert ses_outage.requests == 1
    status = aws.task(task_id)
    assert status is not None and (status["state"], status["attempts"]) == ("succeeded", "2")


def test_an_ses_answer_slower_than_the_read_timeout_is_one_request_within_the_budget(
    aws: AwsStack, ses_outage: SesOutage, lambda_context: LambdaContext
) -> None:
    # Given SES that answers only after 10.5 s (the endpoint)
    ses_outage.answer_after(10.5)
    task_id = enqueue_email()
    settings = installed().settings

    # When the EmailWorker gets the message
    started = time.monotonic()
    failed = handle(received_event(aws.email_queue), lambda_context)
    elapsed = time.monotonic() - started

    # Then one request was made, cut off at the read timeout: the worker gave up within the
    # record's time budget, far inside the Lambda's 30 s, and the queue will retry it
    assert ses_outage.requests == 1
    assert len(failed) == 1
    ses_limit = settings.ses_connect_timeout_seconds + settings.ses_read_timeout_seconds
    assert settings.ses_read_timeout_seconds <= elapsed < ses_limit + 1
    assert elapsed < budget_seconds()
    status = aws.task(task_id)
    assert status is not None and status["state"] == "retrying"
    assert "timeout" in status["error"].lower()


def test_ses_is_not_called_when_the_invocation_has_less_time_left_than_the_call_needs(
    aws: AwsStack, ses_outage: SesOutage, json_logs: JsonLogs
) -> None:
    # Given an invocation with just over the record budget left, which then loses time before
    # the send (a slow DynamoDB claim, simulated by moving the invocation's start back)
    settings = installed().settings
    task_id = enqueue_email()
    context = LambdaContext("offload-dev-EmailWorker", int(budget_seconds()) + 1)
    needed = settings.ses_send_seconds

    def slow_claim(**_: Any) -> None:
        context.started -= context.get_remaining_time_in_millis() / 1000 - (needed - 0.5)

    installed().clients.dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", slow_claim)

    # When the worker reaches the send
    failed = handle(received_event(aws.email_queue), context)

    # Then SES is not called at all (a call that could outlive the invocation might send an
    # email that is never recorded); the record goes back to the queue, the task is retrying
    assert ses_outage.requests == 0
    assert len(failed) == 1
    status = aws.task(task_id)
    assert status is not None and status["state"] == "retrying"
    assert "SES SendEmail not attempted" in status["error"]
    assert json_logs.find("task failed; will retry")


# ---------------------------------------------------------------- riding out an outage


def test_records_that_a_slow_ses_leaves_no_time_for_come_back_after_the_backoff(
    aws: AwsStack, ses_outage: SesOutage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three emails in one batch whose records run one after another (as the records past
    # OFFLOAD_RECORD_CONCURRENCY do), SES answering slower than its read timeout, and an
    # invocation with time for the first record only
    monkeypatch.setenv("OFFLOAD_RECORD_CONCURRENCY", "1")
    compose(monkeypatch)
    ses_outage.answer_after(10.5)
    enqueue_email(count=3)
    event = received_event(aws.email_queue)
    assert len(event["Records"]) == 3
    context = LambdaContext("offload-dev-EmailWorker", int(budget_seconds()) + 2)

    # When the EmailWorker handles the batch
    failed = handle(event, context)

    # Then SES got one request; the other two records went back untouched, but hidden for a
    # backoff like any transient failure, so that an outage which slows every invocation does
    # not burn their receives (and send them to the DLQ) faster than the backoff allows
    assert ses_outage.requests == 1
    assert len(failed) == 3
    assert aws.receive_all(aws.email_queue) == []
    for record in event["Records"]:
        # (the untouched ones have no record yet: they still read as queued, by their ids)
        status = aws.task(json.loads(record["body"])["task_id"])
        assert status is None or status["state"] == "retrying"


def test_ses_throttled_for_ten_minutes_does_not_kill_the_task(
    aws: AwsStack,
    ses_outage: SesOutage,
    lambda_context: LambdaContext,
    json_logs: JsonLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given SES throttling every SendEmail, and an email task on the queue
    ses_outage.throttle()
    task_id = enqueue_email()
    sqs = boto3.client("sqs", region_name=REGION)
    max_receives = installed().settings.max_receive_count
    waited = 0

    # When every receive but the last is throttled (the test shows each message again at once
    # instead of sleeping through the backoff the worker asked for, and adds that wait up)
    for receive in range(1, max_receives):
        event = received_event(aws.email_queue)
        record = event["Records"][0]
        assert record["attributes"]["ApproximateReceiveCount"] == str(receive)
        assert handle(event, lambda_context) == [record["messageId"]]
        status = aws.task(task_id)
        assert status is not None and status["state"] == "retrying", f"receive {receive}"
        [retry] = json_logs.find("task failed; will retry")[-1:]
        waited += retry["retry_in_seconds"]
        sqs.change_message_visibility(
            QueueUrl=aws.email_queue, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )

    # Then the task was still alive after at least ten minutes of backoff, one SES request per
    # receive
    assert waited >= 600
    assert ses_outage.requests == max_receives - 1

    # And when SES recovers before the last receive, the email goes out once
    ses_recovers(monkeypatch)
    assert handle(received_event(aws.email_queue), lambda_context) == []
    assert len(aws.sent_emails()) == 1
    status = aws.task(task_id)
    assert status is not None and status["state"] == "succeeded"
