"""The UploadWorker against moto S3, SQS and DynamoDB from template.yaml, with events/ in.

Each test puts a real object in the stack's UploadBucket, feeds the worker's handler an event
from events/ (pointed at that bucket), and reads the task status and the result objects back.
"""

import csv
import gzip
import io
import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import boto3
import pytest
import requests
from fastapi.testclient import TestClient

from api.main import app
from local.lambda_runtime import sqs_event
from offload import dlq
from offload.aws import clients, sqs, tasks_table
from offload.models import TaskState
from offload.settings import get_settings
from offload.uploads.models import UPLOAD_KIND
from tests.support import REGION, AwsStack, EventLoader, JsonLogs
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
        return tasks_table.get(upload_id)

    def clear(self) -> None:
        for key in self.keys():
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        self.sqs.purge_queue(QueueUrl=self.queue)
        self.sqs.purge_queue(QueueUrl=self.dlq)


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
    tasks_table.create(SQS_UPLOAD, UPLOAD_KIND)
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


def test_every_s3_record_in_a_message_is_handled(
    uploads: Uploads, event: EventLoader, lambda_context: Any
) -> None:
    # Given one SQS message whose S3 notification holds two records
    message = uploads.aimed(event("sqs-upload-worker.json"))
    body = json.loads(message["Records"][0]["body"])
    second = json.loads(json.dumps(body["Records"][0]))
    second["s3"]["object"]["key"] = f"uploads%2F{PUT_UPLOAD}%2Fsecond+file.csv"
    body["Records"].append(second)
    message["Records"][0]["body"] = json.dumps(body)
    uploads.put(SQS_KEY, b"x\n1\n")
    uploads.put(f"uploads/{PUT_UPLOAD}/second file.csv", b"y\n2\n")

    response = handler(message, lambda_context)

    assert response == {"batchItemFailures": []}
    assert uploads.task(SQS_UPLOAD).state is TaskState.SUCCEEDED
    assert uploads.task(PUT_UPLOAD).state is TaskState.SUCCEEDED


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
    tasks_table.create(SQS_UPLOAD, UPLOAD_KIND)
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
    get_settings.cache_clear()
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
    get_settings.cache_clear()

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
    tasks_table.create(SQS_UPLOAD, UPLOAD_KIND)
    uploads.put(SQS_KEY, b"a\n1\n")
    message = uploads.aimed(event("sqs-upload-worker.json"))

    def fail(**_: Any) -> None:
        raise ValueError("unforeseen")

    s3 = clients.s3()
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
    get_settings.cache_clear()
    uploads.put(SQS_KEY, b"a\n1\n")
    uploads.sqs.purge_queue(QueueUrl=uploads.queue)  # the put's own, live notification
    tasks_table.transition(SQS_UPLOAD, UPLOAD_KIND, TaskState.DEAD, attempts=5, error="Throttling")
    notification = uploads.aimed(event("sqs-upload-worker.json"))["Records"][0]["body"]
    uploads.sqs.send_message(QueueUrl=dlq_url, MessageBody=notification)
    try:
        # When an operator redrives the upload DLQ
        assert dlq.main(["redrive", "--queue", "upload"]) == 0

        # Then the upload is queued again (not skipped as finished), and the worker runs it
        assert uploads.task(SQS_UPLOAD).state is TaskState.QUEUED
        messages = uploads.sqs.receive_message(
            QueueUrl=uploads.queue, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )["Messages"]
        assert len(messages) == 1
        redriven = sqs_event(messages, sqs.queue_arn(uploads.queue))  # type: ignore[arg-type]
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
                "size": 24,
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
            files={"file": ("My Data.tsv", b"k\tv\nx\t1\ny\t2\n")},
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
