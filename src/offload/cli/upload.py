"""`offload upload FILE`: POST /uploads, stream the file to the presigned POST with a progress
bar, wait for the worker, print the summary.

The file goes to S3 as httpx's multipart stream: the form fields, then the file read in 64 KiB
chunks through Rich's progress reader, with its length known up front (Content-Length, as S3's
POST wants), so a file of any size is never held in memory.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from offload.cli.api import Api
from offload.cli.output import ExitCode, fail, say, stderr, stdout

FINAL_STATES = frozenset({"succeeded", "failed", "dead", "cancelled"})
S3_TIMEOUT = httpx.Timeout(60, write=600)  # per chunk: a slow link still moves 64 KiB a minute


def guess_content_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".gz", ".gzip")):
        return "application/gzip"
    if name.endswith((".tsv", ".tab")):
        return "text/tab-separated-values"
    return "text/csv"


def progress_bar(*, quiet: bool = False) -> Progress:
    """Bytes sent of the total, the rate and the time left; on stderr (stdout is the output)."""
    return Progress(
        TextColumn("uploading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        disable=quiet,
    )


def send_file(offer: dict[str, Any], path: Path, *, quiet: bool = False) -> None:
    """POST the file to the presigned form: its fields first, then the file, streamed."""
    with (
        progress_bar(quiet=quiet) as progress,
        progress.open(path, "rb", description=path.name) as reader,
        # Not the API's client: the bearer token must not go to S3.
        httpx.Client(timeout=S3_TIMEOUT) as s3,
    ):
        sent = s3.post(
            offer["url"],
            data=offer["fields"],
            files={"file": (path.name, reader, offer["fields"].get("Content-Type"))},
        )
    if sent.status_code not in (200, 201, 204):
        fail(f"S3 refused the file ({sent.status_code}): {sent.text[:500]}", ExitCode.FAILED)


def upload(
    path: Path,
    api: Api,
    *,
    timeout: float = 600,
    quiet: bool = False,
    on_state: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Upload a file through the API and return its final GET /uploads/{id} answer."""
    size = path.stat().st_size
    offer: dict[str, Any] = api.call(
        "POST",
        "/uploads",
        json={"filename": path.name, "content_type": guess_content_type(path), "size": size},
        expected=(201,),
    )
    if not quiet:
        say(f"upload {offer['upload_id']}: {size / 1e6:.1f} MB → {offer['key']}")
    send_file(offer, path, quiet=quiet)
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        answer: dict[str, Any] = api.call("GET", offer["status_url"])
        if answer["state"] != state:
            state = answer["state"]
            if on_state is not None:
                on_state(state)
        if answer["state"] in FINAL_STATES:
            return answer
        time.sleep(0.5)
    fail(
        f"upload {offer['upload_id']} is still {state} after {timeout:.0f} s: "
        f"see {offer['status_url']}",
        ExitCode.FAILED,
    )


def print_result(answer: dict[str, Any]) -> None:
    console = stdout()
    if answer["state"] != "succeeded":
        console.print(f"[red]{escape(answer['state'])}[/]: {escape(str(answer.get('error')))}")
        return
    summary = answer["summary"]
    rows, source = summary["rows"], summary["source"]
    console.print(
        f"rows: {rows['read']} read, {rows['written']} written, {rows['blank']} blank, "
        f"{rows['duplicate']} duplicate, {rows['ragged']['count']} ragged",
        markup=False,
    )
    console.print(
        f"source: {source['bytes']} bytes, {source['encoding']}, delimiter "
        f"{source['delimiter']!r}, gzip {source['compressed']}",
        markup=False,
    )
    columns = summary.get("columns", [])
    if columns:
        stats = sorted({k for c in columns for k in c} - {"name", "source_name", "type"})
        table = Table(header_style="bold", box=None)
        for name in ("COLUMN", "TYPE", *(s.upper() for s in stats)):
            table.add_column(name, justify="left" if name in ("COLUMN", "TYPE") else "right")
        for column in columns:
            table.add_row(
                escape(str(column["name"])),
                escape(str(column["type"])),
                *(escape(_number(column.get(s))) for s in stats),
            )
        console.print(table)
    for name, url in (answer.get("results") or {}).items():
        console.print(f"{name}: {url}", markup=False, soft_wrap=True)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)
