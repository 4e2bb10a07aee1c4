"""A task's record against messages and writes that come in an unlucky order.

- case 10: a body that fails validation but names a real task id (a copy of the task's
  message with one unknown field, or a broken payload) arrives before the real message. The
  poison path must not destroy the task on its word: the real message still runs it, once.
- case 11: the worker writes the task's record before the API's `queued` write (they run side
  by side): the owner must not be lost, so another caller still cannot read the task;
- case 9 (claim check): a message's payload pointer is followed only to its own task's payload
  in the payload bucket, never to another task's payload or another bucket's object.

The EmailWorker is the real handler fed by the real local poller, in this process; the API is
`api.main.handler` (Mangum) fed API Gateway events with a JWT authorizer's claims.
"""

import json
import threading
import time
from collections import Counter
from typing import Any

import boto3
import pytest

from api.main import handler
from example_app.emails import send_email
from example_app.notifications import write_log
from offload.enqueue import TaskCall, enqueue
from offload.models import TaskMessage, TaskState
from offload.registry import definition_of
from tests.reliability.harness import (
    api_event,
    claims_of,
    event_source,
    fast_queues,
    poll_until,
    pollers,
    queue_depth,
    sdk_hook,
)
from tests.reliability.support import print_table
from tests.support import REGION, AwsStack, JsonLogs, installed

pytestmark = pytest.mark.timeout(120)

RECEIVES = 3
VISIBILITY = 2
ALICE = "5f1e6a2c-0b7d-4e3f-9a18-c2d4e6f8a0b1"
BOB = "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
QUEUED_WRITE_DELAY = 3.0  # seconds the API's `queued` write may wait for the worker


def _poison_copy(message: TaskMessage, variant: str) -> str:
    body: dict[str, Any] = json.loads(message.model_dump_json())
    if variant == "one unknown field":
        body["smuggled"] = "x"
    else:
        body["enqueued_at"] = "not a date"
    return json.dumps(body)


def test_a_poison_copy_naming_a_real_task_never_kills_it(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = definition_of(send_email)
    variants = ["one unknown field", "a field of the wrong type"]
    calls = [
        TaskCall(email, email.payload(to=f"real-{i}@example.com", subject="Hi", text="x"))
        for i in range(4)
    ]
    with fast_queues(aws, monkeypatch, ["EmailQueue"], receives=RECEIVES, visibility=VISIBILITY):
        # Given for each task a broken copy of its message on the queue before the real one
        for index, call in enumerate(calls):
            real = TaskMessage(task_id=call.task_id, kind=email.name, payload=call.payload)
            attributes = {
                "task_id": {"DataType": "String", "StringValue": str(call.task_id)},
                "kind": {"DataType": "String", "StringValue": email.name},
            }
            installed().sqs.send_raw(
                aws.email_queue, _poison_copy(real, variants[index % 2]), attributes
            )
        enqueue(installed(), calls, correlation_id="reliability-poison-copy")

        # When the EmailWorker takes them
        with pollers([event_source(aws, "EmailWorker")]):
            poll_until(lambda: not queue_depth(aws.email_queue), 20)

    # Then every real task ran once
    emails = Counter(a for m in aws.sent_emails() for a in m.destinations["ToAddresses"])
    states = {c.payload["to"]: (aws.task(c.task_id) or {}).get("state") for c in calls}
    print_table(
        "A broken copy of a task's message before the real one",
        [(to, f"{states[to]}, {emails[to]} email(s)") for to in states]
        + [("DLQ (the broken copies)", queue_depth(aws.email_dlq))],
    )
    for to, state in states.items():
        assert state == TaskState.SUCCEEDED, (to, state)
        assert emails[to] == 1, (to, emails[to])


def test_the_owner_survives_a_worker_that_writes_first(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    # Given the API's `queued` write held back until the worker has recorded the task
    table = aws.tasks_table
    worker_first = threading.Event()

    def hold_queued_write(params: dict[str, Any], **_: Any) -> None:
        item = params.get("Item") or {}
        if params.get("TableName") == table and item.get("state", {}).get("S") == "queued":
            task_id = item["task_id"]["S"]
            if poll_until(lambda: aws.task(task_id) is not None, QUEUED_WRITE_DELAY, 0.05):
                worker_first.set()

    with (
        fast_queues(aws, monkeypatch, ["EmailQueue"], receives=RECEIVES, visibility=VISIBILITY),
        sdk_hook("before-parameter-build.dynamodb.PutItem", hold_queued_write),
        pollers([event_source(aws, "EmailWorker")]),
    ):
        # When Alice creates a task, and the worker runs it before its record is written
        body = {"to": "owner@example.com", "subject": "Hi", "text": "x"}
        started = time.monotonic()
        created = handler(api_event("POST", "/emails", body, claims_of(ALICE)), lambda_context)
        assert created["statusCode"] == 202, created["body"]
        task_id = json.loads(created["body"])["task_id"]
        poll_until(lambda: (aws.task(task_id) or {}).get("state") == TaskState.SUCCEEDED, 15)

        # Then only Alice can read it
        read = {
            who: handler(
                api_event("GET", f"/tasks/{task_id}", claims=claims_of(sub)), lambda_context
            )
            for who, sub in (("Alice", ALICE), ("Bob", BOB))
        }
    record = aws.task(task_id) or {}
    print_table(
        "The worker records a task before the API's queued write",
        [
            ("worker wrote first", worker_first.is_set()),
            ("task state / owner", f"{record.get('state')} / {record.get('owner')}"),
            (
                "GET /tasks/{id} as Alice / as Bob",
                f"{read['Alice']['statusCode']} / {read['Bob']['statusCode']}",
            ),
            ("run time", f"{time.monotonic() - started:.1f}s"),
        ],
    )
    assert read["Alice"]["statusCode"] == 200, read["Alice"]["body"]
    assert read["Bob"]["statusCode"] == 404, read["Bob"]["body"]
    assert record.get("owner") == ALICE, record


def test_a_payload_pointer_is_followed_only_to_its_own_payload(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch, json_logs: JsonLogs
) -> None:
    settings = {"OFFLOAD_MAX_MESSAGE_BYTES": "1024"}  # any payload over 1 KiB goes to S3
    with fast_queues(
        aws, monkeypatch, ["TaskQueue"], receives=RECEIVES, visibility=VISIBILITY, settings=settings
    ):
        # Given a task whose large payload was checked in to the payload bucket
        log = definition_of(write_log)
        (checked_in,) = enqueue(
            installed(), [TaskCall(log, log.payload("task A's secret " + "x" * 2_000))]
        )
        assert checked_in.payload_ref, "the payload should have gone to S3"
        # ... and messages of other tasks pointing at it, and at another bucket's object
        bucket = aws.environment["OFFLOAD_UPLOAD_BUCKET"]
        body = json.dumps({"message": "someone else's object"}).encode()
        boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key="x.json", Body=body)
        forged = [
            TaskMessage(kind=log.name, payload={}, payload_ref=checked_in.payload_ref),
            TaskMessage(kind=log.name, payload={}, payload_ref=f"s3://{bucket}/x.json"),
        ]
        assert not installed().sqs.send_messages(aws.task_queue, forged)

        # When the TaskWorker takes them
        ids = [checked_in.task_id, *(m.task_id for m in forged)]
        with pollers([event_source(aws, "TaskWorker")]):
            poll_until(
                lambda: (
                    not queue_depth(aws.task_queue)
                    and all(
                        (aws.task(t) or {}).get("state") in (TaskState.SUCCEEDED, TaskState.DEAD)
                        for t in ids
                    )
                ),
                20,
            )

    # Then the owner of the payload ran once; the forged pointers were never followed
    lines = Counter(r.get("task_id") for r in json_logs.records if r.get("event") == "write_log")
    rows = []
    for name, task_id in zip(
        ("its own task", "another task's", "another bucket's"), ids, strict=True
    ):
        record = aws.task(task_id) or {}
        rows.append(
            (
                f"pointer to {name} payload",
                f"{record.get('state')}, {lines[str(task_id)]} log line(s)",
            )
        )
    print_table("Claim-check pointers", rows)
    assert (aws.task(ids[0]) or {}).get("state") == TaskState.SUCCEEDED
    assert lines[str(ids[0])] == 1
    for task_id in ids[1:]:
        record = aws.task(task_id) or {}
        assert lines[str(task_id)] == 0, f"{task_id}: a forged pointer was followed"
        assert record.get("state") == TaskState.DEAD and record.get("error"), record
