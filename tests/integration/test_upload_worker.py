"""The UploadWorker against moto S3, SQS and DynamoDB from template.yaml, with events/ in.

Each test puts a real object in the stack's UploadBucket, feeds the worker's handler an event
from events/ (pointed at that bucket), and reads the task status and the result objects back.
"""

import csv
import gzip
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus
from uuid import UUID

import boto3
import pytest
import requests
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.response import StreamingBody
from fastapi.testclient import TestClient

from api.main import app
from example_app.uploads.models import UPLOAD_KIND
from example_app.uploads.summary import TableSummary
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.models import TaskState
from tests.integration import upload_child
from tests.support import (
    REGION,
    AwsStack,
    EventLoader,
    JsonLogs,
    compose,
    installed,
    offload_command,
    record_task,
)
from workers.upload import handler

SQS_UPLOAD = UUID("3f2b8d4e-1c6a-4f7b-8e9d-5a4b3c2d1e0f")
SQS_KEY = f"uploads/{SQS_UPLOAD}/orders.csv"
PUT_UPLOAD = UUID("0b7a4c1e-5a55-4e0f-9f43-3c1b2f7d9a01")
UNICODE_UPLOAD = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
UNICODE_KEY = f"uploads/{UNICODE_UPLOAD}/Q1 sales résumé € + tax.csv"
ORDERS = (
    b"\xef\xbb\xbfOrder ID, Customer ,Amount,Shipped\r\n"
    b"1, ann ,10.5,2024-01-02\r\n"
    b"2,bob,4,2024-01-03\r\n"
    b"\r\n"
    b"1,ann,10.5,2024-01-02\r\n"
    b'3,"carl, jr",,2024-01-05,\r\n'
    b"4,dee\r\n"
)


class Uploads:
    def __init__(self, stack: AwsStack) -> None:
        self.bucket = stack.environment["OFFLOAD_UPLOAD_BUCKET"]
        self.queue = stack.environment["OFFLOAD_UPLOAD_QUEUE_URL"]
        self.dlq = stack.environment["OFFLOAD_UPLOAD_DLQ_URL"]
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.stack = stack

    def put(self, key: str, body: bytes, content_type: str = "text/csv") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        found = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        return sorted(o["Key"] for o in found)

    def aimed(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event with its bucket name set to this stack's bucket (in SQS bodies too)."""
        text = json.dumps(event)
        old = "offload-uploads-9b2f3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
        return json.loads(text.replace(old, self.bucket))  # type: ignore[no-any-return]

    def task(self, upload_id: UUID) -> Any:
        return installed().tasks.get(upload_id)

    def clear(self) -> None:
        for key in self.keys():
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        self.sqs.purge_queue(QueueUrl=self.queue)
        self.sqs.purge_queue(QueueUrl=self.dlq)


TSV_FILE = b"k\tv\nx\t1\ny\t2\n"


@pytest.fixture
def uploads(aws: AwsStack) -> Iterator[Uploads]:
    helper = Uploads(aws)
    helper.clear()  # the s3:TestEvent sent when the notification was set up, and leftovers
    yield helper
    helper.clear()


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def test_sqs_event_cleans_summarises_and_writes_results(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given an upload recorded as queued by the API, and its file in the bucket
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    uploads.put(SQS_KEY, ORDERS)

    # When S3's notification arrives through the UploadQueue
    response = handler(uploads.aimed(event("sqs-upload-worker.json")), lambda_context)

    # Then the record is processed, and the task succeeded with the summary
    assert response == {"batchItemFailures": []}
    task = uploads.task(SQS_UPLOAD)
    assert task.state is TaskState.SUCCEEDED
    assert task.attempts == 1
    rows = task.result["rows"]
    assert (rows["read"], rows["written"], rows["blank"], rows["duplicate"]) == (6, 4, 1, 1)
    assert rows["ragged"]["rows"] == [
        {"line": 6, "fields": 5, "expected": 4, "action": "trimmed"},
        {"line": 7, "fields": 2, "expected": 4, "action": "padded"},
    ]
    amount = next(c for c in task.result["columns"] if c["name"] == "amount")
    assert (amount["type"], amount["sum"], amount["empty"]) == ("float", 14.5, 2)
    # And the cleaned CSV and summary.json are in results/
    assert uploads.keys("results/") == [
        f"results/{SQS_UPLOAD}/cleaned.csv",
        f"results/{SQS_UPLOAD}/summary.json",
    ]
    assert csv_rows(uploads.get(f"results/{SQS_UPLOAD}/cleaned.csv")) == [
        ["order_id", "customer", "amount", "shipped"],
        ["1", "ann", "10.5", "2024-01-02"],
        ["2", "bob", "4", "2024-01-03"],
        ["3", "carl, jr", "", "2024-01-05"],
        ["4", "dee", "", ""],
    ]
    summary = json.loads(uploads.get(f"results/{SQS_UPLOAD}/summary.json"))
    assert summary["upload_id"] == str(SQS_UPLOAD)
    assert summary["columns"] == task.result["columns"]
    # And it ran as a task does, claimed on its record (the upload id), whose origin is the key
    assert uploads.stack.table_items(uploads.stack.idempotency_table) == []
    assert uploads.stack.task(SQS_UPLOAD)["origin"] == SQS_KEY  # type: ignore[index]


def test_a_key_with_spaces_and_unicode_is_decoded(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    uploads.put(UNICODE_KEY, "città,€\nRoma,1\n".encode())

    response = handler(uploads.aimed(event("sqs-upload-unicode-key.json")), lambda_context)

    assert response == {"batchItemFailures": []}
    task = uploads.task(UNICODE_UPLOAD)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.result["filename"] == "Q1 sales résumé € + tax.csv"
    assert [c["name"] for c in task.result["columns"]] == ["città", "column_2"]


def test_a_direct_s3_event_as_sam_local_invoke_sends_it(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    uploads.put(f"uploads/{PUT_UPLOAD}/sales.csv", b"a,b\n1,2\n")

    response = handler(uploads.aimed(event("s3-put.json")), lambda_context)

    assert response == {"processed": 1}
    assert uploads.task(PUT_UPLOAD).state is TaskState.SUCCEEDED


def two_objects(uploads: Uploads, event: EventLoader) -> dict[str, Any]:
    """One SQS message whose S3 notification holds two records: SQS_UPLOAD's object, then
    PUT_UPLOAD's, both in the bucket."""
    message = uploads.aimed(event("sqs-upload-worker.json"))
    body = json.loads(message["Records"][0]["body"])
    second = json.loads(json.dumps(body["Records"][0]))
    second["s3"]["object"]["key"] = f"uploads%2F{PUT_UPLOAD}%2Fsecond+file.csv"
    body["Records"].append(second)
    message["Records"][0]["body"] = json.dumps(body)
    uploads.put(SQS_KEY, b"x\n1\n")
    uploads.put(f"uploads/{PUT_UPLOAD}/second file.csv", b"y\n2\n")
    return message


def test_every_s3_record_in_a_message_is_handled(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given one SQS message whose S3 notification holds two records
    message = two_objects(uploads, event)

    response = handler(message, lambda_context)

    assert response == {"batchItemFailures": []}
    assert uploads.task(SQS_UPLOAD).state is TaskState.SUCCEEDED
    assert uploads.task(PUT_UPLOAD).state is TaskState.SUCCEEDED


def test_an_object_that_must_retry_leaves_the_others_of_its_notification_done(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given one SQS message whose S3 notification holds two objects, and S3 throttling the
    # read of the first one
    message = two_objects(uploads, event)

    def slow_down(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == SQS_KEY:
            raise ClientError(
                {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                "GetObject",
            )

    s3 = installed().clients.s3
    s3.meta.events.register("before-parameter-build.s3.GetObject", slow_down)
    try:
        # When the UploadWorker gets it
        response = handler(message, lambda_context)
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.GetObject", slow_down)

    # Then the message is reported failed, so that it comes back: the first upload will retry,
    # the second is done
    record_id = message["Records"][0]["messageId"]
    assert response == {"batchItemFailures": [{"itemIdentifier": record_id}]}
    assert uploads.task(SQS_UPLOAD).state is TaskState.RETRYING
    done = uploads.task(PUT_UPLOAD)
    assert done.state is TaskState.SUCCEEDED

    # When the message comes back, then the first runs, and the second is not run again
    message["Records"][0]["attributes"]["ApproximateReceiveCount"] = "2"
    assert handler(message, lambda_context) == {"batchItemFailures": []}
    assert uploads.task(SQS_UPLOAD).state is TaskState.SUCCEEDED
    assert uploads.task(PUT_UPLOAD).updated_at == done.updated_at


def test_s3_test_event_is_ignored(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    response = handler(uploads.aimed(event("sqs-upload-test-event.json")), lambda_context)

    assert response == {"batchItemFailures": []}
    assert uploads.stack.table_items(uploads.stack.tasks_table) == []


def test_a_duplicate_delivery_is_skipped(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    uploads.put(SQS_KEY, b"x\n1\n")
    message = uploads.aimed(event("sqs-upload-worker.json"))
    handler(message, lambda_context)
    first = uploads.task(SQS_UPLOAD)
    # The same notification again (SQS delivers at least once), after the file was replaced
    uploads.put(SQS_KEY, b"x\n2\n")
    message["Records"][0]["attributes"]["ApproximateReceiveCount"] = "2"

    response = handler(message, lambda_context)

    assert response == {"batchItemFailures": []}
    again = uploads.task(SQS_UPLOAD)
    assert again.state is TaskState.SUCCEEDED
    assert again.updated_at == first.updated_at
    assert csv_rows(uploads.get(f"results/{SQS_UPLOAD}/cleaned.csv")) == [["x"], ["1"]]


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "the file is empty (0 bytes)"),
        (b"\r\n\r\n", "the file has no rows: it is blank"),
        (PNG, "the file is a PNG image, not CSV text"),
        (bytes(range(256)) * 40, "the file is not text"),
        (gzip.compress(b"a,b\n1,2\n")[:20], "not a valid gzip stream"),
        (None, "the uploaded file was deleted before it could be processed"),
    ],
    ids=["empty", "blank", "png", "binary", "broken-gzip", "missing"],
)
def test_files_that_can_never_succeed_fail_at_once_without_retry(
    uploads: Uploads,
    event: EventLoader,
    lambda_context: Any,
    body: bytes | None,
    reason: str,
) -> None:
    # Given a bad file (or none: deleted before the worker ran)
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    if body is not None:
        uploads.put(SQS_KEY, body)

    # When its notification is handled
    response = handler(uploads.aimed(event("sqs-upload-worker.json")), lambda_context)

    # Then the message is done with (not reported failed: it will not come back)...
    assert response == {"batchItemFailures": []}
    # ...the task failed with a clear reason, and no result was written
    task = uploads.task(SQS_UPLOAD)
    assert task.state is TaskState.FAILED
    assert reason in (task.error or "")
    assert uploads.keys("results/") == []


def test_over_the_limit_fails_at_once(
    uploads: Uploads,
    event: EventLoader,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OFFLOAD_UPLOAD_MAX_BYTES", "1000")
    compose(monkeypatch)
    uploads.put(SQS_KEY, b"a\n" + b"1\n" * 1000)
    message = uploads.aimed(event("sqs-upload-worker.json"))
    # The notification's size is what S3 saw; here the object itself is checked too.
    body = json.loads(message["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["size"] = 500
    message["Records"][0]["body"] = json.dumps(body)

    response = handler(message, lambda_context)

    assert response == {"batchItemFailures": []}
    task = uploads.task(SQS_UPLOAD)
    assert task.state is TaskState.FAILED
    assert task.error == "the file is 2002 bytes; the limit is 1000 bytes"


def test_one_bad_message_never_fails_the_batch(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given a batch: a good upload, an empty file, and a message that is not S3's at all
    good = uploads.aimed(event("sqs-upload-worker.json"))["Records"][0]
    empty = uploads.aimed(event("sqs-upload-unicode-key.json"))["Records"][0]
    garbage = dict(good, messageId="not-s3", body="hello")
    uploads.put(SQS_KEY, b"a\n1\n")
    uploads.put(UNICODE_KEY, b"")

    response = handler({"Records": [good, empty, garbage]}, lambda_context)

    assert response == {"batchItemFailures": []}
    assert uploads.task(SQS_UPLOAD).state is TaskState.SUCCEEDED
    assert uploads.task(UNICODE_UPLOAD).state is TaskState.FAILED
    assert [m["Body"] for m in uploads.stack.receive_all(uploads.dlq)] == ["hello"]


def test_a_message_that_is_not_an_s3_notification_goes_to_the_dlq_with_its_reason(
    uploads: Uploads, event: EventLoader, lambda_context: Any, json_logs: JsonLogs
) -> None:
    # Given a poison message on the UploadQueue: JSON, but not an S3 notification
    poison = event("sqs-upload-poison.json")
    record = poison["Records"][0]

    # When the UploadWorker gets it
    response = handler(poison, lambda_context)

    # Then it is reported as processed (Lambda deletes it: no retry loop)...
    assert response == {"batchItemFailures": []}
    # ...and a copy is in the UploadDeadLetterQueue, with the reason
    [dead] = uploads.stack.receive_all(uploads.dlq)
    assert dead["Body"] == record["body"]
    reason = dead["MessageAttributes"]["error"]["StringValue"]
    assert reason.startswith("not an S3 notification: ValueError(")
    # And the error log names the message
    [line] = json_logs.find("poison message sent to the DLQ")
    assert (line["level"], line["message_id"]) == ("ERROR", record["messageId"])
    assert line["reason"] == reason


def test_without_a_dlq_url_a_poison_message_is_failed_not_dropped(
    uploads: Uploads, event: EventLoader, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker that does not know its DLQ
    monkeypatch.delenv("OFFLOAD_UPLOAD_DLQ_URL")
    compose(monkeypatch)

    # When a poison message arrives, then the record fails, so that SQS's redrive policy moves
    # it to the DLQ after its receives
    poison = event("sqs-upload-poison.json")
    response = handler(poison, lambda_context)
    assert response["batchItemFailures"] == [
        {"itemIdentifier": r["messageId"]} for r in poison["Records"]
    ]
    assert uploads.stack.receive_all(uploads.dlq) == []


def test_an_unexpected_error_while_processing_is_retried_not_dropped(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given a good file, and an S3 read that fails with an error the worker did not foresee
    # (a ValueError, which the "not an S3 notification" guard must not swallow)
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    uploads.put(SQS_KEY, b"a\n1\n")
    message = uploads.aimed(event("sqs-upload-worker.json"))

    def fail(**_: Any) -> None:
        raise ValueError("unforeseen")

    s3 = installed().clients.s3
    s3.meta.events.register("before-call.s3.GetObject", fail)
    try:
        # When its notification is handled, then the record fails, so the message comes back
        # rather than vanish
        response = handler(message, lambda_context)
        assert len(response["batchItemFailures"]) == 1
    finally:
        s3.meta.events.unregister("before-call.s3.GetObject", fail)

    # And the task says it will retry, with the reason
    task = uploads.task(SQS_UPLOAD)
    assert task.state is TaskState.RETRYING
    assert task.error == "ValueError: unforeseen"


def test_a_dead_upload_redriven_from_its_dlq_is_processed_again(
    uploads: Uploads, event: EventLoader, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an upload that died: its S3 notification reached the UploadDeadLetterQueue
    dlq_url = uploads.stack.resources["UploadDeadLetterQueue"]
    monkeypatch.setenv("OFFLOAD_UPLOAD_DLQ_URL", dlq_url)
    compose(monkeypatch)
    uploads.put(SQS_KEY, b"a\n1\n")
    uploads.sqs.purge_queue(QueueUrl=uploads.queue)  # the put's own, live notification
    record_task(SQS_UPLOAD, UPLOAD_KIND, TaskState.DEAD, attempts=5, error="Throttling")
    notification = uploads.aimed(event("sqs-upload-worker.json"))["Records"][0]["body"]
    uploads.sqs.send_message(QueueUrl=dlq_url, MessageBody=notification)
    try:
        # When an operator redrives the upload DLQ
        redriven = offload_command("dlq", "redrive", "--queue", "uploads", obj=installed())
        assert redriven.exit_code == 0, redriven.output

        # Then the upload is queued again (not skipped as finished), and the worker runs it
        assert uploads.task(SQS_UPLOAD).state is TaskState.QUEUED
        messages = uploads.sqs.receive_message(
            QueueUrl=uploads.queue, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )["Messages"]
        assert len(messages) == 1
        redriven = sqs_event(messages, installed().sqs.queue_arn(uploads.queue))  # type: ignore[arg-type]
        assert handler(redriven, lambda_context) == {"batchItemFailures": []}
        assert uploads.task(SQS_UPLOAD).state is TaskState.SUCCEEDED
    finally:
        uploads.sqs.purge_queue(QueueUrl=dlq_url)


def test_the_whole_flow_through_the_api_a_presigned_post_and_the_queue(
    uploads: Uploads, lambda_context: Any
) -> None:
    with TestClient(app) as client:
        # Given an upload offer from the API
        offer = client.post(
            "/uploads",
            json={
                "filename": "../My Data.tsv",
                "content_type": "text/tab-separated-values",
                "size": len(TSV_FILE),
            },
        )
        assert offer.status_code == 201, offer.text
        created = offer.json()
        upload_id = UUID(created["upload_id"])
        assert created["key"] == f"uploads/{upload_id}/My Data.tsv"
        assert created["fields"]["Content-Type"] == "text/tab-separated-values"
        assert client.get(f"/uploads/{upload_id}").json()["state"] == "queued"

        # When the client POSTs the file to S3 with the presigned form
        sent = requests.post(
            created["url"],
            data=created["fields"],
            files={"file": ("My Data.tsv", TSV_FILE)},
            timeout=10,
        )
        assert sent.status_code in (200, 204), sent.text

        # Then S3 notified the UploadQueue, and the worker handles that message
        messages = uploads.sqs.receive_message(
            QueueUrl=uploads.queue, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )["Messages"]
        assert len(messages) == 1
        response = handler(
            sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q"), lambda_context
        )
        assert response == {"batchItemFailures": []}

        answer = client.get(f"/uploads/{upload_id}").json()
        assert answer["state"] == "succeeded"
        assert answer["summary"]["rows"]["written"] == 2
        cleaned = requests.get(answer["results"]["cleaned_csv"], timeout=10)
        assert cleaned.status_code == 200
        assert cleaned.text == "k,v\nx,1\ny,2\n"


def test_api_refuses_files_it_cannot_process(aws: AwsStack) -> None:
    with TestClient(app) as client:
        response = client.post(
            "/uploads", json={"filename": "report.xlsx", "content_type": "text/csv", "size": 10}
        )
        assert response.status_code == 422
        assert "CSV or TSV" in response.text
        assert client.get("/uploads/7c9e6679-7425-40de-944b-e07fc1f90ae7").status_code == 404


# ---------------------------------------------------------------- hostile files (issue 8)
ROOT = Path(__file__).resolve().parents[2]
PEAK_RSS_LIMIT_MB = 256


def _message_for(uploads: Uploads, event: EventLoader, key: str) -> dict[str, Any]:
    """The UploadQueue message of S3's notification for `key` in this stack's bucket."""
    message = uploads.aimed(event("sqs-upload-worker.json"))
    body = json.loads(message["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["key"] = quote_plus(key, safe="/")
    message["Records"][0]["body"] = json.dumps(body)
    return message


def _failed_records(message: dict[str, Any], context: Any) -> list[str]:
    """The ids of the records the handler reported failed."""
    response = handler(message, context)
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def _late_context(seconds_left: float, timeout: int = 300) -> LambdaContext:
    """The context of an invocation that has `seconds_left` of its `timeout` seconds."""
    return LambdaContext(
        function_name="offload-dev-UploadWorker-TEST",
        timeout_seconds=timeout,
        started=time.monotonic() - (timeout - seconds_left),
    )


@pytest.fixture(scope="module")
def hostile_outcomes() -> dict[str, dict[str, Any]]:
    """Every hostile shape through the handler, in one child process (see upload_child)."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.integration.upload_child"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    outcomes = [
        json.loads(line.removeprefix(upload_child.RESULT))
        for line in child.stdout.splitlines()
        if line.startswith(upload_child.RESULT)
    ]
    return {outcome["shape"]: outcome for outcome in outcomes}


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ("wide_gzip", "the header has 100000 columns; the limit is 16384"),
        ("wide_rows_narrow_header", "line 2 has 100000 fields; the limit is 16384"),
        ("quoted_record", "a record starting at line 2 is longer than 1048576 characters"),
        ("huge_field", "a record starting at line 2 is longer than 1048576 characters"),
        ("no_line_breaks", "a record starting at line 1 is longer than 1048576 characters"),
        ("blank_lines_before_header", None),
        ("widest_allowed", None),
    ],
)
def test_a_hostile_file_shape_ends_in_its_first_delivery_in_bounded_memory(
    hostile_outcomes: dict[str, dict[str, Any]], shape: str, reason: str | None
) -> None:
    # Given a file of a hostile shape in S3 (built in a fresh process, with moto in it)
    # When the UploadWorker's handler gets its notification, in that process
    outcome = hostile_outcomes[shape]

    # Then the first delivery ends it: done with (no retry), succeeded or failed with a reason
    assert outcome["response"] == {"batchItemFailures": []}, outcome
    if reason is None:
        assert outcome["state"] == "succeeded", outcome
    else:
        assert outcome["state"] == "failed", outcome
        assert reason in outcome["error"], outcome
    # And the whole process (moto's copy of the file included) stayed under 256 MB
    assert outcome["peak_mb"] < PEAK_RSS_LIMIT_MB, outcome


def test_a_gzip_that_cannot_be_processed_in_the_time_left_fails_once_for_good(
    uploads: Uploads, event: EventLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 3 MB gzip that expands to 3 GiB (under the expanded-size limit set here)
    monkeypatch.setenv("OFFLOAD_UPLOAD_MAX_EXPANDED_BYTES", str(20 * 1024**3))
    compose(monkeypatch)
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    member = gzip.compress(b"1,2\n" * (8 * 1024**2))
    uploads.put(SQS_KEY, gzip.compress(b"a,b\n") + member * 96, "application/gzip")
    # And an invocation with 8 s left of its 300 s (5 s of it kept for finishing a record)
    monkeypatch.setenv("OFFLOAD_RECORD_TIME_BUDGET_MS", "5000")
    compose(monkeypatch)
    context = _late_context(8)

    # When the UploadWorker gets the notification
    started = time.monotonic()
    response = handler(_message_for(uploads, event, SQS_KEY), context)

    # Then it stops before the function's timeout, and the upload failed for good, once
    assert time.monotonic() - started < 8
    assert response == {"batchItemFailures": []}
    task = uploads.task(SQS_UPLOAD)
    assert (task.state, task.attempts) == (TaskState.FAILED, 1)
    assert "too large to process within the function's time" in (task.error or "")
    assert uploads.keys("results/") == []


def test_a_number_too_large_for_a_float_is_summarised_not_retried(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given a file with a 309-digit integer (beyond a float's range) and a 400-digit one
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    huge = "9" * 309
    uploads.put(SQS_KEY, f"id,n,m\n1,{huge},5\n2,3,{'1' * 400}\n".encode())

    # When the UploadWorker gets its notification
    response = handler(_message_for(uploads, event, SQS_KEY), lambda_context)

    # Then the upload succeeded: those columns are text, the values are kept as they are
    assert response == {"batchItemFailures": []}
    task = uploads.task(SQS_UPLOAD)
    assert task.state is TaskState.SUCCEEDED, task.error
    columns = {c["name"]: c for c in task.result["columns"]}
    assert (columns["n"]["type"], columns["m"]["type"]) == ("string", "string")
    assert columns["id"]["sum"] == 3
    rows = csv_rows(uploads.get(f"results/{SQS_UPLOAD}/cleaned.csv"))
    assert rows[1] == ["1", huge, "5"]


def test_an_unexpected_error_in_the_pipeline_fails_the_upload_once_with_the_error(
    uploads: Uploads,
    event: EventLoader,
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    json_logs: JsonLogs,
) -> None:
    # Given a bug in the summary that this file triggers (the same way on every delivery)
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    uploads.put(SQS_KEY, b"a\n1\n")

    def bug(*_: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(TableSummary, "update", bug)

    # When the UploadWorker gets its notification
    response = handler(_message_for(uploads, event, SQS_KEY), lambda_context)

    # Then there is no retry loop: the upload failed at once, the reason names the error
    assert response == {"batchItemFailures": []}
    task = uploads.task(SQS_UPLOAD)
    assert (task.state, task.attempts) == (TaskState.FAILED, 1)
    assert "ZeroDivisionError: a bug" in (task.error or "")
    assert uploads.keys("results/") == []
    # And the log has the traceback
    [line] = json_logs.find("upload processing raised an unexpected error; failed")
    assert "ZeroDivisionError" in line["exception"]


def test_an_s3_read_that_breaks_midway_is_retried(
    uploads: Uploads, event: EventLoader, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a good file whose download times out after its first megabyte
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    uploads.put(SQS_KEY, b"a,b\n" + b"".join(b"%d,x\n" % i for i in range(400_000)))
    read = StreamingBody.read

    def flaky(self: StreamingBody, amt: int | None = None) -> bytes:
        if self._amount_read >= 1024 * 1024:
            raise ReadTimeoutError(endpoint_url="https://s3.amazonaws.com")
        return read(self, amt)

    monkeypatch.setattr(StreamingBody, "read", flaky)

    # When the UploadWorker gets its notification, then the record fails and comes back
    message = _message_for(uploads, event, SQS_KEY)
    assert len(handler(message, lambda_context)["batchItemFailures"]) == 1
    task = uploads.task(SQS_UPLOAD)
    assert task.state is TaskState.RETRYING
    assert "Read timeout" in (task.error or "")

    # And when it comes back (S3 answering again), the failed invocation holds nothing: it runs
    monkeypatch.setattr(StreamingBody, "read", read)
    message["Records"][0]["attributes"]["ApproximateReceiveCount"] = "2"
    assert handler(message, lambda_context) == {"batchItemFailures": []}
    assert uploads.task(SQS_UPLOAD).state is TaskState.SUCCEEDED


@pytest.mark.parametrize("exists", [True, False], ids=["other-bucket", "missing-bucket"])
def test_an_event_for_another_bucket_is_ignored_and_named_in_the_log(
    uploads: Uploads,
    event: EventLoader,
    lambda_context: Any,
    json_logs: JsonLogs,
    exists: bool,
) -> None:
    # Given an upload waiting for its file, and someone else's bucket holding its key
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    other = "someone-elses-bucket"
    if exists:
        uploads.s3.create_bucket(Bucket=other)
        uploads.s3.put_object(Bucket=other, Key=SQS_KEY, Body=b"forged\n1\n")
    message = _message_for(uploads, event, SQS_KEY)
    message["Records"][0]["body"] = message["Records"][0]["body"].replace(uploads.bucket, other)

    try:
        # When the UploadWorker gets that bucket's notification
        response = handler(message, lambda_context)

        # Then it is done with, the upload is untouched, nothing was written anywhere
        assert response == {"batchItemFailures": []}
        task = uploads.task(SQS_UPLOAD)
        assert (task.state, task.result, task.error) == (TaskState.QUEUED, None, None)
        assert uploads.keys("results/") == []
        if exists:
            listed = uploads.s3.list_objects_v2(Bucket=other).get("Contents", [])
            assert [o["Key"] for o in listed] == [SQS_KEY]
        # And the log names the bucket
        [line] = json_logs.find("event for another bucket; ignored")
        assert (line["bucket"], line["key"]) == (other, SQS_KEY)
    finally:
        if exists:
            for leftover in uploads.s3.list_objects_v2(Bucket=other).get("Contents", []):
                uploads.s3.delete_object(Bucket=other, Key=leftover["Key"])
            uploads.s3.delete_bucket(Bucket=other)


class Killed(BaseException):
    """The invocation dies (a timeout, out of memory): no Python handler runs after it."""


def test_a_second_object_for_the_same_upload_neither_runs_beside_the_first_nor_mixes(
    uploads: Uploads,
    event: EventLoader,
    monkeypatch: pytest.MonkeyPatch,
    json_logs: JsonLogs,
) -> None:
    # Given an upload whose first file is being processed by an invocation that then dies
    # (2 s before its timeout), and a second file for the same upload id
    monkeypatch.setenv("OFFLOAD_RECORD_TIME_BUDGET_MS", "0")
    compose(monkeypatch)
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    second_key = f"uploads/{SQS_UPLOAD}/second.csv"
    uploads.put(SQS_KEY, b"file\nfirst\n")
    uploads.put(second_key, b"file\nsecond\n")
    first = _message_for(uploads, event, SQS_KEY)
    copy = json.loads(json.dumps(first))
    copy["Records"][0]["messageId"] = "copy-of-first"
    second = _message_for(uploads, event, second_key)
    second["Records"][0]["messageId"] = "second-object"

    def die(**_: Any) -> None:
        raise Killed

    s3 = installed().clients.s3
    s3.meta.events.register("before-call.s3.GetObject", die)
    try:
        with pytest.raises(Killed):
            handler(first, _late_context(2))
    finally:
        s3.meta.events.unregister("before-call.s3.GetObject", die)

    # When a copy of the first file's notification arrives while that invocation holds it
    # Then it does not run beside it: it comes back later, nothing is written
    assert _failed_records(copy, _late_context(60)) == ["copy-of-first"]
    [held] = json_logs.find("task is running in another delivery")
    assert held["retry_in_seconds"] <= 3
    assert uploads.task(SQS_UPLOAD).state is TaskState.RUNNING
    assert uploads.keys("results/") == []

    # When the second file's notification arrives, then it is ignored for good, and logged
    assert handler(second, _late_context(60)) == {"batchItemFailures": []}
    [ignored] = json_logs.find("task claimed from another origin first; ignored")
    assert (ignored["origin"], ignored["claimed_origin"]) == (second_key, SQS_KEY)
    assert uploads.keys("results/") == []

    # When the first file's message comes back after that invocation's timeout, then it runs
    time.sleep(2.1)
    assert handler(first, _late_context(60)) == {"batchItemFailures": []}
    # And the second's, again, changes nothing: the upload has the first file's results only
    assert handler(second, _late_context(60)) == {"batchItemFailures": []}
    task = uploads.task(SQS_UPLOAD)
    assert task.state is TaskState.SUCCEEDED
    assert task.result["filename"] == "orders.csv"
    assert csv_rows(uploads.get(f"results/{SQS_UPLOAD}/cleaned.csv")) == [["file"], ["first"]]
    summary = json.loads(uploads.get(f"results/{SQS_UPLOAD}/summary.json"))
    assert summary["filename"] == "orders.csv"


def test_formula_cells_are_neutralised_in_the_cleaned_csv(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given cells a spreadsheet would run as formulas, among numbers with signs
    installed().tasks.create(SQS_UPLOAD, UPLOAD_KIND)
    uploads.put(
        SQS_KEY,
        b"name,amount\n"
        b'"=HYPERLINK(""http://evil.example"",""click"")",-1.5\n'
        b"+cmd|' /C calc'!A0,+8\n"
        b"@SUM(A1:A9),-2e3\n"
        b'"\t-1+1",  -7  \n'
        b"-,1\n"
        b"'=quoted already,2\n"
        b"=quoted already,2\n",
    )

    # When the UploadWorker processes it
    response = handler(_message_for(uploads, event, SQS_KEY), lambda_context)

    # Then every such text cell starts with a single quote; numbers are left alone
    assert response == {"batchItemFailures": []}
    assert csv_rows(uploads.get(f"results/{SQS_UPLOAD}/cleaned.csv")) == [
        ["name", "amount"],
        ['\'=HYPERLINK("http://evil.example","click")', "-1.5"],
        ["'+cmd|' /C calc'!A0", "+8"],
        ["'@SUM(A1:A9)", "-2e3"],
        ["'-1+1", "-7"],
        ["'-", "1"],
        ["'=quoted already", "2"],
        ["'=quoted already", "2"],
    ]
    # And the summary describes the data itself (the two last rows are not duplicates)
    task = uploads.task(SQS_UPLOAD)
    assert task.result["rows"]["duplicate"] == 0
    amount = next(c for c in task.result["columns"] if c["name"] == "amount")
    assert (amount["type"], amount["min"], amount["max"]) == ("float", -2000.0, 8.0)
