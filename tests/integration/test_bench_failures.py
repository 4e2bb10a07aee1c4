"""`make bench` keeps going when one figure cannot be measured, and says why in its table.

The upload figures run for real on tiny files (moto's server in its own process, a measuring
child per size); the failure is injected into the second size only.
"""

from typing import Any

import pytest
from benchmarks import __main__ as bench
from benchmarks import uploads
from benchmarks._common import measured

MB = 1_000_000


def test_a_figure_that_fails_is_a_row_with_its_reason_and_the_others_are_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the peak-RSS benchmark on two small files, the second of which cannot be created
    # (moto's 500 on CompleteMultipartUpload in the run that crashed the bench)
    put = uploads._put_generated

    def put_or_fail(endpoint: str, bucket: str, key: str, size: int) -> int:
        if size == 2 * MB:
            raise RuntimeError("CompleteMultipartUpload: InternalError (injected)")
        return put(endpoint, bucket, key, size)

    monkeypatch.setattr(uploads, "_put_generated", put_or_fail)

    # When it runs
    rows = uploads.peak_rss((1 * MB, 2 * MB))

    # Then the first size is measured, and the second and the comparison are rows that say
    # they were not measured, and why
    by_figure: dict[str, Any] = {row["figure"]: row for row in rows}
    measured = by_figure["upload worker peak RSS, 1 MB CSV from moto S3"]
    assert measured["value"] > 0 and "not_measured" not in measured
    failed = by_figure["upload worker peak RSS, 2 MB CSV from moto S3"]
    assert failed["value"] is None
    assert "InternalError (injected)" in failed["not_measured"]
    comparison = by_figure["upload worker peak RSS, 2 MB against 1 MB"]
    assert comparison["value"] is None and comparison["not_measured"]

    # And the table shows them, with the reason, and the run's exit status says a figure is
    # missing
    text = bench.table(rows)
    line = next(line for line in text.splitlines() if "2 MB CSV from moto S3 |" in line)
    assert "not measured" in line
    assert "not measured: RuntimeError: CompleteMultipartUpload: InternalError" in text
    assert bench.exit_status(rows, errors=[]) == 1
    assert bench.exit_status([measured], errors=[]) == 0


def test_a_whole_benchmark_that_fails_becomes_a_row_and_the_next_one_still_runs() -> None:
    def broken() -> list[dict[str, Any]]:
        raise ConnectionError("moto's server did not start")

    rows = [
        *measured("(b) enqueue figures", broken),
        *measured("(x) a working figure", lambda: [{"figure": "(x)", "value": 1.0}]),
    ]

    assert rows[0]["figure"] == "(b) enqueue figures"
    assert rows[0]["not_measured"] == "ConnectionError: moto's server did not start"
    assert rows[1] == {"figure": "(x)", "value": 1.0}


def test_a_figure_this_machine_cannot_measure_is_skipped_with_its_reason_not_failed() -> None:
    from benchmarks._common import skipped

    rows = [
        skipped("(a) built ApiFunction", "no SAM CLI found: run `make tools`"),
        {"figure": "(x)", "value": 1.0},
    ]

    text = bench.table(rows)
    line = next(line for line in text.splitlines() if line.startswith("| (a) built"))
    assert line.rstrip(" |").endswith("skipped")
    assert "- (a) built ApiFunction: skipped: no SAM CLI found: run `make tools`" in text
    assert bench.exit_status(rows, errors=[]) == 0
