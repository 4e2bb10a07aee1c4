"""A failed multipart upload whose abort fails too still reports the error that caused it.

The case from `make bench`: moto answered 500 to CompleteMultipartUpload of a result file, the
abort then failed with NoSuchUpload, and that second error replaced the first.
"""

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import boto3
import pytest
from botocore.exceptions import ClientError

from example_app.uploads.models import UPLOAD_KIND
from offload.aws.uploads_s3 import PART_BYTES, MultipartWriter
from offload.models import TaskState
from tests.support import REGION, AwsStack, EventLoader, JsonLogs, installed
from workers.upload import handler

UPLOAD = UUID("5e1d3c2b-9a8f-4e7d-8c6b-5a4f3e2d1c0b")
KEY = f"uploads/{UPLOAD}/large.csv"
EVENT_BUCKET = "offload-uploads-9b2f3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
EVENT_KEY = "uploads/3f2b8d4e-1c6a-4f7b-8e9d-5a4b3c2d1e0f/orders.csv"


def lose_the_answer(**_: Any) -> None:
    """after-call: S3 completed the upload, but the worker sees a 500 (the answer was lost)."""
    raise ClientError(
        {
            "Error": {"Code": "InternalError", "Message": "We encountered an internal error."},
            "ResponseMetadata": {"HTTPStatusCode": 500},
        },
        "CompleteMultipartUpload",
    )


@pytest.fixture
def complete_fails(aws: AwsStack) -> Iterator[None]:
    s3 = installed().clients.s3
    s3.meta.events.register("after-call.s3.CompleteMultipartUpload", lose_the_answer)
    yield
    s3.meta.events.unregister("after-call.s3.CompleteMultipartUpload", lose_the_answer)
    bucket = aws.environment["OFFLOAD_UPLOAD_BUCKET"]
    client = boto3.client("s3", region_name=REGION)
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])


def test_the_writer_raises_the_complete_error_when_the_abort_fails_too(
    aws: AwsStack, complete_fails: None, json_logs: JsonLogs
) -> None:
    # Given a multipart write whose CompleteMultipartUpload fails (and is gone on S3's side)
    bucket = aws.environment["OFFLOAD_UPLOAD_BUCKET"]
    writer = MultipartWriter(
        installed().clients.s3, bucket, "results/abort-test/cleaned.csv", "text/csv"
    )
    writer.write(b"x" * (PART_BYTES + 1))

    # When it is closed, and aborted on the failure as the upload service does
    with pytest.raises(Exception) as raised:
        try:
            writer.close()
        except BaseException:
            writer.abort()
            raise

    # Then the error is the complete's, and the failed abort is a warning with its reason
    assert "CompleteMultipartUpload" in str(raised.value)
    assert "InternalError" in str(raised.value)
    [warning] = json_logs.find("multipart upload not aborted; S3 expires its parts")
    assert "NoSuchUpload" in warning["reason"]


def test_an_upload_whose_result_cannot_be_completed_reports_that_error(
    aws: AwsStack,
    complete_fails: None,
    event: EventLoader,
    lambda_context: Any,
    json_logs: JsonLogs,
) -> None:
    # Given an upload whose cleaned CSV is larger than one part, and S3 failing to complete it
    bucket = aws.environment["OFFLOAD_UPLOAD_BUCKET"]
    rows = b"".join(b"%d,customer %d,%d.50\n" % (i, i, i) for i in range(450_000))
    assert len(rows) > PART_BYTES
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=bucket, Key=KEY, Body=b"id,customer,amount\n" + rows, ContentType="text/csv"
    )
    installed().tasks.create(UPLOAD, UPLOAD_KIND)
    message = json.loads(json.dumps(event("sqs-upload-worker.json")).replace(EVENT_BUCKET, bucket))
    message["Records"] = message["Records"][:1]
    body = message["Records"][0]["body"]
    message["Records"][0]["body"] = body.replace(EVENT_KEY, KEY)

    # When the UploadWorker handles its notification
    response = handler(message, lambda_context)
    assert len(response["batchItemFailures"]) == 1

    # Then the task will retry, and its reason is the failed complete, not the failed abort
    task = installed().tasks.get(UPLOAD)
    assert task is not None and task.state is TaskState.RETRYING
    assert task.error is not None
    assert "CompleteMultipartUpload" in task.error and "InternalError" in task.error
    assert "NoSuchUpload" not in task.error
    assert json_logs.find("multipart upload not aborted; S3 expires its parts")
