"""Uploads on the running local system: presigned POST to moto's S3, the bucket notification
to the UploadQueue, the UploadWorker's poller, and the results read back over HTTP."""

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from offload.cli.output import ExitCode
from tests.e2e.conftest import LocalSystem
from tests.e2e.local_system import clean_environment
from tests.support import ROOT, offload_command

pytestmark = pytest.mark.e2e


def make_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as out:
        out.write("ID,Name,Amount,Note\r\n")
        for i in range(rows):
            out.write(f'{i}, name {i % 97} ,{i % 1000}.25,"note, {i % 7}"\r\n')
            if i % 10_000 == 0:
                out.write("\r\n")  # blank
                out.write(f'{i}, name {i % 97} ,{i % 1000}.25,"note, {i % 7}"\r\n')  # duplicate


def upload_command(system: LocalSystem, path: Path, tmp_path: Path) -> tuple[int, str, str, int]:
    """`offload upload PATH --json` in a process of its own, as in a terminal (Rich draws its
    live progress bar): its exit code, stdout, stderr and peak memory (VmHWM, KiB)."""
    out, err = tmp_path / f"{path.name}.out", tmp_path / f"{path.name}.err"
    env = {
        **clean_environment(),
        "OFFLOAD_API_URL": system.api_url,
        "TTY_COMPATIBLE": "1",  # Rich: draw as on a terminal, although stderr is a file
        "TTY_INTERACTIVE": "1",
        "COLUMNS": "120",
    }
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "offload.local", "upload", str(path), "--json"],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        # Its high-water mark, read while it runs: after the file went out, it waits for the
        # worker. (wait4's ru_maxrss would count this test process, which it was forked from.)
        peak = 0
        while process.poll() is None:
            peak = max(peak, high_water_kib(process.pid))
            time.sleep(0.05)
    return process.returncode, out.read_text(), err.read_text(), peak


def high_water_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0
    )


def test_a_large_csv_streams_with_progress_and_comes_back_clean(
    local_system: LocalSystem, tmp_path: Path
) -> None:
    # Given a ~12 MB CSV (the cleaned file spans more than one multipart part), and a tiny one
    source = tmp_path / "big data.csv"
    make_csv(source, 250_000)
    size = source.stat().st_size
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("a,b\n1,2\n")

    # When each is uploaded with the command (POST /uploads, then the presigned POST)
    code, out, err, peak = upload_command(local_system, source, tmp_path)
    tiny_code, _, _, tiny_peak = upload_command(local_system, tiny, tmp_path)

    # Then the progress bar counted the file's bytes up to its size, and the file was streamed:
    # the command's memory grew by far less than the file (a body built in memory adds it all)
    assert code == 0 and tiny_code == 0, err
    assert f"{size / 1e6:.1f}/{size / 1e6:.1f} MB" in err, err[-2000:]
    assert "succeeded" in err
    assert (peak - tiny_peak) * 1024 < size / 2, (peak, tiny_peak, size)
    # And the worker cleaned and summarised it
    answer = json.loads(out)
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


def test_an_empty_file_fails_clearly_with_exit_1(local_system: LocalSystem, tmp_path: Path) -> None:
    source = tmp_path / "empty.csv"
    source.write_bytes(b"\n\n")

    result = offload_command("--api", local_system.api_url, "upload", str(source), "--json")

    assert result.exit_code == ExitCode.FAILED, result.output
    answer = json.loads(result.stdout)
    assert answer["state"] == "failed"
    assert answer["error"] == "the file has no rows: it is blank"
    assert answer["results"] is None


def test_the_upload_command_prints_the_summary(local_system: LocalSystem, tmp_path: Path) -> None:
    source = tmp_path / "small.tsv"
    source.write_text("city\tpeople\nRoma\t2873000\nMilano\t1352000\n")

    result = offload_command("--api", local_system.api_url, "upload", str(source))

    assert result.exit_code == 0, result.output
    assert "succeeded" in result.stderr  # the states as they come, for the person waiting
    assert "rows: 2 read, 2 written" in result.stdout
    (people,) = [line.split() for line in result.stdout.splitlines() if "people" in line]
    assert people[:2] == ["people", "integer"]
    assert "cleaned_csv: http" in result.stdout
