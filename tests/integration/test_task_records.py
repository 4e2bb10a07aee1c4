"""One record per task, both its status and its claim: what a task costs in DynamoDB, and what
the claim guarantees, through the real entry points (the API's Lambda handler, SQS events into
the EmailWorker's handler, moto's SES).

- POST /emails writes nothing to DynamoDB; the worker writes twice (claim, outcome), reads never;
- a copy delivered while the first delivery holds the claim comes back after the lease, and
  the email is sent once;
- a holder that died (its lease over) is run again by the next delivery;
- a cancelled task's message is dropped;
- GET of an id with no record: its owner sees `queued`, anyone else and any other id 404;
- a message SQS refused is `failed` (not enqueued), and an Idempotency-Key retry that gets
  through runs it.
"""

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest

from api.main import handler as api
from offload.aws import tasks_table
from offload.local.lambda_runtime import LambdaContext
from offload.models import TaskState, utcnow
from offload.task_ids import new_task_id
from tests.integration.test_task_ownership import ALICE, BOB, as_caller, at, read
from tests.integration.test_workers import received_event
from tests.support import REGION, AwsStack, EventLoader, JsonLogs, installed
from workers import email as email_worker

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}


@pytest.fixture
def dynamodb_calls(aws: AwsStack) -> Iterator[Counter[str]]:
    """Every DynamoDB call the API and the workers make, by operation (a botocore hook on the
    client they share)."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    events = installed().clients.dynamodb.meta.events
    events.register("before-call.dynamodb.*", count)
    yield calls
    events.unregister("before-call.dynamodb.*", count)


def writes(calls: Counter[str]) -> int:
    return sum(n for op, n in calls.items() if op in WRITES)


def reads(calls: Counter[str]) -> int:
    return sum(n for op, n in calls.items() if op in READS)


def post_email(event: EventLoader, context: Any, sub: str | None = ALICE, **extra: Any) -> UUID:
    body = {"to": "bob@example.org", "subject": "Hi", "text": "Hello"}
    request = at(event("api-emails.json"), "POST", "/emails", body)
    request["headers"].update(extra.get("headers", {}))
    if sub is not None:
        request = as_caller(request, sub, "offload/tasks.write")
    response = api(request, context)
    assert response["statusCode"] == 202, response["body"]
    return UUID(json.loads(response["body"])["task_id"])


def test_a_task_costs_no_write_in_the_api_and_two_in_the_worker(
    aws: AwsStack, event: EventLoader, lambda_context: Any, dynamodb_calls: Counter[str]
) -> None:
    # When a client POSTs an email
    task_id = post_email(event, lambda_context)

    # Then the API made no DynamoDB call at all: one SQS send
    assert dict(dynamodb_calls) == {}

    # When the EmailWorker runs the message
    response = email_worker.handler(received_event(aws.email_queue), lambda_context)

    # Then the email is sent, and the worker wrote twice (claim, outcome) and read nothing
    assert response == {"batchItemFailures": []}
    assert len(aws.sent_emails()) == 1
    assert (writes(dynamodb_calls), reads(dynamodb_calls)) == (2, 0), dynamodb_calls
    record = aws.task(task_id)
    assert record is not None
    assert (record["state"], record["owner"], record["attempts"]) == ("succeeded", ALICE, "1")
    # And one item, small: one write unit a write
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=aws.tasks_table, Key={"task_id": {"S": str(task_id)}}
    )["Item"]
    assert len(json.dumps(item)) < 1024
    # And its history tells the story
    shown = json.loads(read(event, f"/tasks/{task_id}", ALICE, lambda_context)["body"])
    assert [(h["state"], h["attempt"]) for h in shown["history"]] == [
        ("running", 1),
        ("succeeded", 1),
    ]


def test_a_copy_delivered_while_the_first_holds_the_claim_comes_back_and_sends_once(
    aws: AwsStack, event: EventLoader, json_logs: JsonLogs
) -> None:
    # Given a task whose first delivery is inside SES (held there), and a copy of its message
    post_email(event, LambdaContext(function_name="Api", timeout_seconds=30))
    batch = received_event(aws.email_queue)
    inside_ses, go_on = threading.Event(), threading.Event()

    def hold(**_: Any) -> None:
        inside_ses.set()
        assert go_on.wait(10)

    ses_events = installed().clients.ses.meta.events
    ses_events.register("before-call.sesv2.SendEmail", hold)
    first: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: first.update(
            email_worker.handler(batch, LambdaContext(function_name="W", timeout_seconds=30))
        )
    )
    runner.start()
    try:
        assert inside_ses.wait(10)
        ses_events.unregister("before-call.sesv2.SendEmail", hold)

        # When the copy arrives meanwhile, at another instance of the function
        other_instance = email_worker.handler.using(installed())
        copy = other_instance(batch, LambdaContext(function_name="W", timeout_seconds=30))
    finally:
        go_on.set()
        runner.join(10)

    # Then the copy is not run: it comes back after the first delivery's lease (30 s + 1)
    [failure] = copy["batchItemFailures"]
    assert failure["itemIdentifier"] == batch["Records"][0]["messageId"]
    [held] = json_logs.find("task is running in another delivery")
    assert 29 <= held["retry_in_seconds"] <= 31
    # And the first sent the email, once; a later copy is dropped as a duplicate
    assert first == {"batchItemFailures": []}
    again = email_worker.handler(batch, LambdaContext(function_name="W", timeout_seconds=30))
    assert again == {"batchItemFailures": []}
    assert len(aws.sent_emails()) == 1
    assert json_logs.find("task already finished; duplicate delivery skipped")


class Killed(BaseException):
    """The Lambda stopped (killed, out of memory, timed out): nothing after it runs."""


def test_a_holder_that_died_is_run_again_by_the_next_delivery(
    aws: AwsStack, event: EventLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a delivery that claimed the task and died before SES answered
    task_id = post_email(event, LambdaContext(function_name="Api", timeout_seconds=30))
    batch = received_event(aws.email_queue)

    def die(**_: Any) -> None:
        raise Killed

    ses_events = installed().clients.ses.meta.events
    ses_events.register("before-call.sesv2.SendEmail", die)
    with pytest.raises(Killed):
        email_worker.handler(batch, LambdaContext(function_name="W", timeout_seconds=30))
    ses_events.unregister("before-call.sesv2.SendEmail", die)
    assert aws.task(task_id)["state"] == "running"  # type: ignore[index]

    # When the message comes back after the dead holder's lease is over (31 s later)
    later = utcnow() + timedelta(seconds=31)
    monkeypatch.setattr(tasks_table, "utcnow", lambda: later)
    response = email_worker.handler(batch, LambdaContext(function_name="W", timeout_seconds=30))

    # Then this delivery claims the task and sends the email, once
    assert response == {"batchItemFailures": []}
    assert len(aws.sent_emails()) == 1
    assert aws.task(task_id)["state"] == "succeeded"  # type: ignore[index]


def test_a_cancelled_tasks_message_is_dropped(
    aws: AwsStack, event: EventLoader, lambda_context: Any, json_logs: JsonLogs
) -> None:
    # Given a task cancelled before any worker took it
    task_id = post_email(event, lambda_context)
    assert installed().tasks.cancel(task_id, ALICE) == (True, TaskState.CANCELLED)

    # When its message reaches the worker
    response = email_worker.handler(received_event(aws.email_queue), lambda_context)

    # Then it is dropped, logged, and nothing is sent
    assert response == {"batchItemFailures": []}
    assert aws.sent_emails() == []
    assert json_logs.find("task cancelled; its message is dropped")
    assert aws.task(task_id)["state"] == "cancelled"  # type: ignore[index]


def test_get_of_an_id_with_no_record(
    aws: AwsStack, event: EventLoader, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a task Alice enqueued, not yet claimed by a worker
    task_id = post_email(event, lambda_context)
    assert aws.task(task_id) is None

    # Then Alice sees it queued, since its id was issued
    mine = read(event, f"/tasks/{task_id}", ALICE, lambda_context)
    assert mine["statusCode"] == 200, mine["body"]
    shown = json.loads(mine["body"])
    assert (shown["state"], shown["kind"], shown["attempts"]) == ("queued", None, 0)
    assert abs((utcnow() - _parse(shown["created_at"])).total_seconds()) < 60
    # And for anyone else, and for a random id, there is no such task
    assert read(event, f"/tasks/{task_id}", BOB, lambda_context)["statusCode"] == 404
    assert read(event, f"/tasks/{task_id}", None, lambda_context)["statusCode"] == 404
    assert read(event, f"/tasks/{uuid4()}", ALICE, lambda_context)["statusCode"] == 404
    # And an id of Alice's older than the queues keep a message is gone too
    monkeypatch.setattr(installed().settings, "message_retention_seconds", 60)
    old = new_task_id(ALICE)
    later = utcnow() + timedelta(seconds=61)
    monkeypatch.setattr("offload.control.utcnow", lambda: later)
    assert read(event, f"/tasks/{old}", ALICE, lambda_context)["statusCode"] == 404


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_refused_message_is_failed_and_an_idempotency_key_retry_runs_it(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given SQS refuses the next send
    sqs_events = installed().clients.sqs.meta.events
    refusals = [1]

    def refuse(**_: Any) -> None:
        if refusals:
            refusals.pop()
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessageBatch"
            )

    sqs_events.register("before-call.sqs.SendMessageBatch", refuse)
    try:
        body = {"to": "bob@example.org", "subject": "Hi", "text": "Hello"}
        request = as_caller(
            at(event("api-emails.json"), "POST", "/emails", body), ALICE, "offload/tasks.write"
        )
        request["headers"]["idempotency-key"] = "order-77"

        # When Alice POSTs with an Idempotency-Key: 503, and the task is failed, not enqueued
        refused = api(request, lambda_context)
        assert refused["statusCode"] == 503, refused["body"]
        [item] = aws.table_items(aws.tasks_table)
        task_id = UUID(item["task_id"]["S"])
        assert item["state"]["S"] == "failed"
        assert item["error"]["S"].startswith("not enqueued: ")

        # When she retries with the same key, and SQS takes it
        accepted = api(request, lambda_context)
    finally:
        sqs_events.unregister("before-call.sqs.SendMessageBatch", refuse)
    assert accepted["statusCode"] == 202, accepted["body"]
    assert UUID(json.loads(accepted["body"])["task_id"]) == task_id

    # Then the worker claims it and sends the email, once
    response = email_worker.handler(received_event(aws.email_queue), lambda_context)
    assert response == {"batchItemFailures": []}
    assert len(aws.sent_emails()) == 1
    assert aws.task(task_id)["state"] == "succeeded"  # type: ignore[index]


# ---------------------------------------------------------------- what scheduling builds on
def test_a_scheduled_task_shows_its_run_at_and_is_claimed_when_due(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    tasks = installed().tasks
    task_id, run_at = new_task_id(ALICE), utcnow() + timedelta(hours=2)
    assert tasks.create_scheduled(task_id, "send_email", ALICE, run_at, "offload-at-1")
    assert not tasks.create_scheduled(task_id, "send_email", ALICE, run_at)  # once

    shown = json.loads(read(event, f"/tasks/{task_id}", ALICE, lambda_context)["body"])
    assert (shown["state"], shown["kind"]) == ("scheduled", "send_email")
    assert _parse(shown["run_at"]) == run_at
    assert tasks.get(task_id).schedule_name == "offload-at-1"  # type: ignore[union-attr]
    # When its message arrives, a worker claims it like a queued task
    assert tasks.claim(task_id, "send_email", attempts=1, lease_seconds=30).taken


def test_cancel_answers_by_state_and_owner(aws: AwsStack) -> None:
    tasks = installed().tasks
    # A task not recorded yet, issued to the caller: cancelled (and recorded so)
    waiting = new_task_id(ALICE)
    assert tasks.cancel(waiting, BOB) == (False, None)
    assert tasks.cancel(waiting, ALICE) == (True, TaskState.CANCELLED)
    assert tasks.cancel(waiting, ALICE) == (False, TaskState.CANCELLED)
    # A scheduled or retrying task: cancelled; by its owner only
    scheduled = new_task_id(ALICE)
    tasks.create_scheduled(scheduled, "send_email", ALICE, utcnow() + timedelta(hours=1))
    assert tasks.cancel(scheduled, BOB) == (False, None)
    assert tasks.cancel(scheduled, ALICE) == (True, TaskState.CANCELLED)
    retrying = new_task_id(ALICE)
    claim = tasks.claim(retrying, "send_email", attempts=1, lease_seconds=30, owner=ALICE)
    assert claim.token is not None
    tasks.finish(retrying, claim.token, TaskState.RETRYING, attempts=1, error="Throttling")
    assert tasks.cancel(retrying, ALICE) == (True, TaskState.CANCELLED)
    # A running or finished task: its state, unchanged
    running = new_task_id(ALICE)
    claim = tasks.claim(running, "send_email", attempts=1, lease_seconds=30, owner=ALICE)
    assert tasks.cancel(running, ALICE) == (False, TaskState.RUNNING)
    assert claim.token is not None
    tasks.finish(running, claim.token, TaskState.SUCCEEDED, attempts=1, result=None)
    assert tasks.cancel(running, ALICE) == (False, TaskState.SUCCEEDED)
    # An id that is nobody's: no such task
    assert tasks.cancel(uuid4(), ALICE) == (False, None)


def test_a_restarted_task_keeps_the_last_twenty_transitions_with_why_it_died(
    aws: AwsStack,
) -> None:
    tasks = installed().tasks
    task_id = new_task_id(None)
    for attempt in range(1, 15):  # 14 receives, each a claim and a retry: 28 entries
        claim = tasks.claim(task_id, "write_log", attempts=attempt, lease_seconds=30)
        assert claim.token is not None
        state = TaskState.DEAD if attempt == 14 else TaskState.RETRYING
        tasks.finish(task_id, claim.token, state, attempts=attempt, error="x" * 1000)
    dead = tasks.get(task_id)
    assert dead is not None and len(dead.history) == 28
    assert all(len(h.error or "") <= 300 for h in dead.history)

    assert tasks.requeue_dead(dead)

    requeued = tasks.get(task_id)
    assert requeued is not None and requeued.state is TaskState.QUEUED
    assert len(requeued.history) == 20
    assert [h.state for h in requeued.history[-2:]] == [TaskState.DEAD, TaskState.QUEUED]
    assert requeued.history[-2].error == "x" * 300
