"""(child process) The UploadWorker's handler on generated hostile files; prints JSON lines.

`python -m tests.integration.upload_child [shape ...]` starts moto in-process with the upload
bucket and the tasks table. For each shape it puts the file under `uploads/{id}/`, forgets
every copy of it, resets the process's peak RSS (VmHWM), feeds the handler the SQS event of S3's
notification, and prints `RESULT {json}`: the task's outcome and the peak RSS of the invocation.
Like Lambda, the whole process counts: moto's own copies of the object and of the results are
inside the figure, so it is an upper bound for the worker.

The address space is capped a little over 1 GiB above what the process holds before each
invocation, so a regression fails with a MemoryError instead of taking the machine's memory.
"""

import contextlib
import ctypes
import gc
import gzip
import json
import os
import resource
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

RESULT = "RESULT"  # the prefix of each outcome line (the handler logs to stdout too)
BUCKET = "offload-uploads-child"
MB = 1024 * 1024


def _gzip_rows(header: bytes, row: bytes, rows: int) -> bytes:
    """A gzip of `header` then `row` repeated, compressed once (gzip files may have members)."""
    body = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [gzip.compress(header), body.compress(row * 64), body.flush()]
    member = b"".join(out[1:])
    return out[0] + member * (rows // 64)


def wide_gzip() -> bytes:
    """The issue's file: 1,024 rows x 100,000 columns, about 415 KB of gzip."""
    row = b",".join([b"x"] * 100_000) + b"\n"
    return _gzip_rows(row, row, 1024)


def wide_rows_narrow_header() -> bytes:
    """A two-column header, then 1,024 rows of 100,000 fields each."""
    return _gzip_rows(b"a,b\n", b",".join([b"x"] * 100_000) + b"\n", 1024)


def quoted_record() -> bytes:
    """The issue's file: one quoted record of 8 million short fields (40 MB)."""
    return b"a\n" + b'"x\n",' * 8_000_000 + b"\n"


def huge_field() -> bytes:
    """One field of 16 MB, quoted (no line break ends it)."""
    return b'a,b\n1,"' + b"x" * (16 * MB) + b'"\n'


def no_line_breaks() -> bytes:
    """16 MB of cells and no line break at all."""
    return b"a," * (8 * MB)


def blank_lines_before_header() -> bytes:
    """300 lines of a million spaces each (300 MB once expanded), then a header and a row."""
    blank = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = blank.compress(b" " * 1_000_000 + b"\n") + blank.flush()
    return member * 300 + gzip.compress(b"a,b\n1,2\n")


def widest_allowed() -> bytes:
    """The most columns a file may have (16,384), with 256 rows of them."""
    header = b",".join(b"c%d" % i for i in range(16_384)) + b"\n"
    row = b",".join(b"%d" % (i % 1000) for i in range(16_384)) + b"\n"
    return _gzip_rows(header, row, 256)


SHAPES: dict[str, Callable[[], bytes]] = {
    f.__name__: f
    for f in (
        wide_gzip,
        wide_rows_narrow_header,
        quoted_record,
        huge_field,
        no_line_breaks,
        blank_lines_before_header,
        widest_allowed,
    )
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _give_back_freed_memory() -> None:
    """Return the heap that earlier shapes freed to the OS (glibc keeps it otherwise), so that
    each shape starts from what the process really holds."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> None:
    """Start VmHWM afresh from the current RSS (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


def _event(key: str, size: int) -> dict[str, Any]:
    notification = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Post",
                "s3": {
                    "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
                    "object": {"key": key, "size": size},
                },
            }
        ]
    }
    return {
        "Records": [
            {
                "messageId": "7e1c9a52-0b3d-4f6e-8a21-3c5d7e9f1b2a",
                "receiptHandle": "handle",
                "body": json.dumps(notification),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:uploads",
                "awsRegion": "us-east-1",
            }
        ]
    }


def main(shapes: list[str]) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="OffloadTests",
        OFFLOAD_UPLOAD_BUCKET=BUCKET,
        OFFLOAD_TASKS_TABLE="tasks",
        OFFLOAD_IDEMPOTENCY_TABLE="idempotency",
    )
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for table, key in (("tasks", "task_id"), ("idempotency", "id")):
            boto3.client("dynamodb").create_table(
                TableName=table,
                AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        for index, shape in enumerate(shapes):
            outcome = _measure(shape, UUID(int=index + 1, version=4))
            print(RESULT, json.dumps(outcome), flush=True)
            for found in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=found["Key"])


def _measure(shape: str, upload_id: UUID) -> dict[str, Any]:
    """One shape through the handler: its outcome and the peak RSS while it ran."""
    import boto3

    from offload.local.lambda_runtime import LambdaContext
    from workers.upload import handler

    key = f"uploads/{upload_id}/{shape}.csv"
    data = SHAPES[shape]()
    size = len(data)
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)
    del data
    gc.collect()
    _give_back_freed_memory()
    held = _status_kb("VmSize") * 1024
    resource.setrlimit(resource.RLIMIT_AS, (held + 1100 * MB, resource.RLIM_INFINITY))
    _reset_peak()
    baseline_kb = _status_kb("VmRSS")
    context = LambdaContext(function_name="UploadWorker", timeout_seconds=300)
    started = time.perf_counter()
    try:
        response: Any = handler(_event(key, size), context)
    except BaseException as exc:
        response = f"raised {exc!r}"[:500]
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM")
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    task = handler.runtime.offload.tasks.get(upload_id)  # what the handler composed
    return {
        "shape": shape,
        "bytes": size,
        "response": response,
        "state": task.state.value if task else None,
        "error": task.error if task else None,
        "baseline_mb": round(baseline_kb / 1024, 1),
        "peak_mb": round(peak_kb / 1024, 1),
        "seconds": round(seconds, 2),
    }


if __name__ == "__main__":
    main(sys.argv[1:] or list(SHAPES))
