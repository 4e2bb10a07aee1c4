"""Upload processing (issue 3): throughput against a plain csv.reader pass, and peak memory.

1. Throughput on a generated 200 MB CSV read from a local file: the full pipeline (decode,
   clean, dedupe, summarise, re-encode; output discarded) against one plain `csv.reader` pass
   over the same bytes, interleaved in one fresh process, and that process's peak RSS.
   Target: at least 0.5x the baseline's MB/s, under 256 MB.
2. Peak RSS of the worker's real path (S3 GetObject stream → pipeline → multipart upload to
   results/) on a 100 MB and a 1 GB generated CSV in moto's S3 (moto in its own process). Each
   measurement runs in a fresh subprocess and reads its own ru_maxrss. Target: < 256 MB, and
   flat between the two sizes.

A figure that cannot be measured (moto failing a call, a child crashing) is a row that says so,
with the reason; the other figures still run.

`python -m benchmarks.uploads [--quick]` prints the rows; `run(quick=None)` returns them for
`make bench`. Quick mode (`run(quick=True)`, or OFFLOAD_BENCH_QUICK=1 in the environment) uses a
20 MB file for throughput and 10 MB and 50 MB objects for peak RSS.
"""

import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    child_env,
    measured,
    moto_server,
    not_measured,
    report_failure,
)

Row = dict[str, Any]
MB = 1_000_000
THROUGHPUT_BYTES = 200 * MB
RSS_SIZES = (100 * MB, 1_000 * MB)
RSS_TARGET_MB = 256
HEADER = "id,customer,email,amount,quantity,ordered_on,paid,note\n"
NAMES = ["ann", "bob", "carla", "dmitri", "eve", "fatima", "gus", "hiro", "ines", "jon"]


def generate_lines(size: int, seed: int = 7) -> Iterator[str]:
    """Realistic, unique CSV lines totalling about `size` bytes (header first)."""
    rnd = random.Random(seed)
    yield HEADER
    total = len(HEADER)
    i = 0
    while total < size:
        i += 1
        name = NAMES[i % 10]
        line = (
            f"{i},{name} {i % 997},{name}.{i}@example.com,{rnd.random() * 1000:.2f},"
            f"{i % 50 + 1},2024-{i % 12 + 1:02d}-{i % 28 + 1:02d},{'true' if i % 3 else 'false'},"
            f'"note {i % 13}, with a comma"\n'
        )
        total += len(line)
        yield line


def write_csv(path: Path, size: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        batch: list[str] = []
        for line in generate_lines(size):
            batch.append(line)
            if len(batch) >= 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))


class _Discard:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)


def _baseline_pass(path: Path) -> float:
    started = time.perf_counter()
    with path.open(newline="", encoding="utf-8") as source:
        for _row in csv.reader(source):
            pass
    return time.perf_counter() - started


def _pipeline_pass(path: Path) -> float:
    from example_app.uploads.pipeline import Limits, process

    started = time.perf_counter()
    with path.open("rb") as source:
        process(source, _Discard(), filename=path.name, limits=Limits(max_tracked_rows=10**7))
    return time.perf_counter() - started


def _throughput_child(spec: str) -> None:
    """(child process) Both passes over one file, interleaved; print their times and the
    process's peak RSS as JSON."""
    args = json.loads(spec)
    path = Path(args["path"])
    baseline, subject = [], []
    for _ in range(args["rounds"]):  # interleaved, so both see the same machine load
        baseline.append(_baseline_pass(path))
        subject.append(_pipeline_pass(path))
    print(json.dumps({"baseline": baseline, "subject": subject, "peak_kb": _peak_kb()}))


def _run_child(flag: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """Run `python -m benchmarks.uploads <flag> <spec>` and return its last line as JSON."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.uploads", flag, json.dumps(spec)],
        cwd=ROOT,
        env=env if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr, flush=True)
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the measuring child ({flag}) failed: {last}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def throughput(size: int = THROUGHPUT_BYTES, rounds: int = 3) -> list[Row]:
    """The pipeline against one csv.reader pass over the same file, in a fresh process whose
    peak RSS is the pipeline's (the csv.reader pass holds one row at a time)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.csv"
        write_csv(path, size)
        actual = path.stat().st_size
        data = _run_child("--throughput", {"path": str(path), "rounds": rounds})
    base_rate = actual / min(data["baseline"]) / MB
    rate = actual / min(data["subject"]) / MB
    ratio = rate / base_rate
    peak_mb = data["peak_kb"] / 1024
    return [
        {
            "figure": f"upload processing throughput, {actual / MB:.0f} MB CSV from a local file",
            "value": round(rate, 1),
            "baseline": round(base_rate, 1),
            "ratio": ratio,
            "target": "≥ 0.5x (vs one plain csv.reader pass)",
            "unit": "MB/s",
            "passed": ratio >= 0.5,
            "note": (
                f"best of {rounds}; pipeline decodes, cleans, dedupes, summarises, re-encodes; "
                f"peak RSS of the process {peak_mb:.0f} MB (every row's fingerprint kept)"
            ),
        },
        {
            "figure": f"upload processing peak RSS, {actual / MB:.0f} MB CSV from a local file",
            "value": round(peak_mb, 1),
            "baseline": None,
            "ratio": None,
            "target": f"< {RSS_TARGET_MB} MB",
            "unit": "MB",
            "passed": peak_mb < RSS_TARGET_MB,
            "note": "the throughput run's process; duplicate tracking uncapped (10,000,000 rows)",
        },
    ]


def _client(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # moto accepts any credentials
        # moto assembles a 1 GB multipart object in memory, for longer than botocore's 60 s
        # default, and a retried CompleteMultipartUpload then fails with InternalError
        config=Config(read_timeout=900, retries={"max_attempts": 1}),
    )


def _put_generated(endpoint: str, bucket: str, key: str, size: int) -> int:
    """Create the object in moto with a multipart upload of generated parts (never all in RAM)."""
    s3 = _client("s3", endpoint)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="text/csv")
    parts, buffer, number, total = [], bytearray(), 1, 0
    part_bytes = 16 * 1024 * 1024

    def flush() -> None:
        nonlocal number
        etag = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=bytes(buffer),
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
        number += 1
        buffer.clear()

    for line in generate_lines(size, seed=size):
        buffer += line.encode()
        total += len(line)
        if len(buffer) >= part_bytes:
            flush()
    if buffer:
        flush()
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    return total


def _peak_kb() -> int:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss can carry the parent's
    peak over the fork (Linux), which made the child look as large as the benchmark runner."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _measure_child(spec: str) -> None:
    """(child process) Run the worker's path on one object; print peak RSS as JSON."""
    args = json.loads(spec)
    idle = _peak_kb()
    from uuid import UUID

    from example_app.uploads.models import UPLOAD_KIND
    from example_app.uploads.tasks import process_upload
    from offload.wiring import build, running

    offload = build()
    offload.tasks.create(UUID(args["upload_id"]), UPLOAD_KIND)
    imported = _peak_kb()
    started = time.perf_counter()
    with running(offload):  # as the worker runs it
        result = process_upload(bucket=args["bucket"], key=args["key"])
    elapsed = time.perf_counter() - started
    peak = _peak_kb()
    print(
        json.dumps(
            {
                "idle_kb": idle,
                "imported_kb": imported,
                "peak_kb": peak,
                "seconds": elapsed,
                "written": (result or {}).get("rows", {}).get("written"),
            }
        )
    )


def _label(size: int) -> str:
    return f"{size // (1_000 * MB)} GB" if size % (1_000 * MB) == 0 else f"{size / MB:,.0f} MB"


def _measure_size(endpoint: str, env: dict[str, str], bucket: str, index: int, size: int) -> Any:
    """Put a generated CSV of `size` bytes in moto and measure the worker's path on it."""
    upload_id = f"00000000-0000-4000-8000-{index:012d}"
    key = f"uploads/{upload_id}/bench-{size // MB}MB.csv"
    actual = _put_generated(endpoint, bucket, key, size)
    spec = {"bucket": bucket, "key": key, "upload_id": upload_id}
    try:
        return _run_child("--measure", spec, env) | {"bytes": actual}
    finally:
        _client("s3", endpoint).delete_object(Bucket=bucket, Key=key)


def peak_rss(sizes: tuple[int, ...] = RSS_SIZES) -> list[Row]:
    """One row per size, and the comparison of the first two; a size that fails is a row that
    says why, and the others are still measured."""
    results: dict[int, dict[str, Any] | str] = {}
    with moto_server() as endpoint:
        env = child_env(AWS_ENDPOINT_URL=endpoint)
        s3 = _client("s3", endpoint)
        dynamodb = _client("dynamodb", endpoint)
        bucket = "offload-bench-uploads"
        s3.create_bucket(Bucket=bucket)
        dynamodb.create_table(
            TableName="bench-tasks",
            AttributeDefinitions=[{"AttributeName": "task_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "task_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        env.update(
            OFFLOAD_TASKS_TABLE="bench-tasks",
            OFFLOAD_UPLOAD_BUCKET=bucket,
            OFFLOAD_UPLOAD_MAX_BYTES=str(2 * 1024**3),
        )
        for index, size in enumerate(sizes):
            try:
                results[size] = _measure_size(endpoint, env, bucket, index, size)
            except Exception as exc:  # the other sizes are still measured
                results[size] = report_failure(f"peak RSS, {_label(size)}", exc)
    rows: list[Row] = []
    for size, data in results.items():
        figure = f"upload worker peak RSS, {_label(size)} CSV from moto S3"
        if isinstance(data, str):
            rows.append(not_measured(figure, data))
            continue
        peak_mb = data["peak_kb"] / 1024
        imported_mb = data["imported_kb"] / 1024
        rows.append(
            {
                "figure": figure,
                "value": round(peak_mb, 1),
                "baseline": round(imported_mb, 1),
                "ratio": peak_mb / imported_mb,
                "target": f"< {RSS_TARGET_MB} MB",
                "unit": "MB",
                "passed": peak_mb < RSS_TARGET_MB,
                "note": (
                    f"baseline: the same process before processing; "
                    f"{data['bytes'] / MB / data['seconds']:.0f} MB/s, {data['written']:,} rows"
                ),
            }
        )
    small_size, large_size = sizes[:2]
    figure = f"upload worker peak RSS, {_label(large_size)} against {_label(small_size)}"
    small, large = results[small_size], results[large_size]
    if isinstance(small, str) or isinstance(large, str):
        rows.append(not_measured(figure, "needs both sizes, and one was not measured"))
        return rows
    small_mb, large_mb = small["peak_kb"] / 1024, large["peak_kb"] / 1024
    rows.append(
        {
            "figure": figure,
            "value": round(large_mb, 1),
            "baseline": round(small_mb, 1),
            "ratio": large_mb / small_mb,
            "target": "flat (≤ 1.25x)",
            "unit": "MB",
            "passed": large_mb / small_mb <= 1.25,
            "note": "duplicate tracking is capped (OFFLOAD_UPLOAD_MAX_TRACKED_ROWS)",
        }
    )
    return rows


def quick_mode() -> bool:
    """Whether `make bench ARGS=--quick` asked for the smoke run (OFFLOAD_BENCH_QUICK=1)."""
    return os.getenv("OFFLOAD_BENCH_QUICK") == "1"


def run(quick: bool | None = None) -> list[Row]:
    """Every upload figure; `quick` (default: OFFLOAD_BENCH_QUICK=1) uses small files."""
    if quick is None:
        quick = quick_mode()
    size, rounds, sizes = (
        (20 * MB, 2, (10 * MB, 50 * MB)) if quick else (THROUGHPUT_BYTES, 3, RSS_SIZES)
    )
    return [
        *measured("upload processing throughput", lambda: throughput(size, rounds)),
        *measured("upload worker peak RSS", lambda: peak_rss(sizes)),
    ]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--measure"]:
        _measure_child(argv[1])
        return 0
    if argv[:1] == ["--throughput"]:
        _throughput_child(argv[1])
        return 0
    for row in run(quick=True if argv[:1] == ["--quick"] else None):
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
