"""Uploads on the running local system: presigned POST to moto's S3, the bucket notification
to the UploadQueue, the UploadWorker's poller, and the results read back over HTTP."""

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from offload.local.upload import upload
from tests.e2e.conftest import LocalSystem
from tests.support import ROOT

pytestmark = pytest.mark.e2e


def make_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as out:
        out.write("ID,Name,Amount,Note\r\n")
        for i in range(rows):
            out.write(f'{i}, name {i % 97} ,{i % 1000}.25,"note, {i % 7}"\r\n')
            if i % 10_000 == 0:
                out.write("\r\n")  # blank
                out.write(f'{i}, name {i % 97} ,{i % 1000}.25,"note, {i % 7}"\r\n')  # duplicate


def test_a_large_csv_goes_through_the_presigned_post_and_comes_back_clean(
    local_system: LocalSystem, tmp_path: Path
) -> None:
    # Given a ~12 MB CSV (the cleaned file spans more than one multipart part)
    source = tmp_path / "big data.csv"
    make_csv(source, 250_000)

    # When it is uploaded the way a client does (POST /uploads, then the presigned POST)
    answer = upload(source, local_system.api_url, quiet=True, timeout=240)

    # Then the worker cleaned and summarised it
    assert answer["state"] == "succeeded", answer.get("error")
    rows = answer["summary"]["rows"]
    assert (rows["read"], rows["written"], rows["blank"], rows["duplicate"]) == (
        250_050,
        250_000,
        25,
        25,
    )
    amount = next(c for c in answer["summary"]["columns"] if c["name"] == "amount")
    assert amount["type"] == "float"
    assert amount["sum"] == pytest.approx(sum(i % 1000 + 0.25 for i in range(250_000)))
    # And the results can be downloaded from their presigned URLs
    cleaned = requests.get(answer["results"]["cleaned_csv"], timeout=60)
    assert cleaned.status_code == 200
    lines = list(csv.reader(io.StringIO(cleaned.text, newline="")))
    assert lines[0] == ["id", "name", "amount", "note"]
    assert lines[1] == ["0", "name 0", "0.25", "note, 0"]
    assert len(lines) == 250_001
    summary = requests.get(answer["results"]["summary_json"], timeout=30).json()
    assert summary["rows"] == answer["summary"]["rows"]


def test_an_empty_file_fails_clearly(local_system: LocalSystem, tmp_path: Path) -> None:
    source = tmp_path / "empty.csv"
    source.write_bytes(b"\n\n")

    answer = upload(source, local_system.api_url, quiet=True, timeout=60)

    assert answer["state"] == "failed"
    assert answer["error"] == "the file has no rows: it is blank"
    assert answer["results"] is None


def test_the_upload_command(local_system: LocalSystem, tmp_path: Path) -> None:
    source = tmp_path / "small.tsv"
    source.write_text("city\tpeople\nRoma\t2873000\nMilano\t1352000\n")

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "offload.local",
            "upload",
            str(source),
            "--api",
            local_system.api_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert "rows: 2 read, 2 written" in result.stdout
    assert "people" in result.stdout and "integer" in result.stdout
