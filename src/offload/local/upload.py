"""`python -m offload.local upload FILE`: POST /uploads, send the file to the presigned POST with
progress, wait for the worker, print the summary."""

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any

import requests

CHUNK = 1024 * 1024
FINAL_STATES = {"succeeded", "failed", "dead"}


class MultipartBody:
    """A multipart/form-data body streamed from disk: the form fields, then the file.

    requests sends it in blocks through `read`, with its length known up front, so a large
    file is never held in memory (requests' own `files=` would build the whole body first).
    """

    def __init__(self, fields: dict[str, str], path: Path, progress: bool) -> None:
        self.boundary = uuid.uuid4().hex
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
            for name, value in fields.items()
        )
        content_type = fields.get("Content-Type", "application/octet-stream")
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        self.parts: list[bytes | IO[bytes]] = [
            head,
            path.open("rb"),
            f"\r\n--{self.boundary}--\r\n".encode(),
        ]
        self.file_size = path.stat().st_size
        self.length = len(head) + self.file_size + len(self.parts[2])  # type: ignore[arg-type]
        self.sent = 0
        self.progress = progress
        self.started = time.monotonic()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        size = CHUNK if size is None or size < 0 else size
        while self.parts:
            part = self.parts[0]
            if isinstance(part, bytes):
                data, rest = part[:size], part[size:]
                if rest:
                    self.parts[0] = rest
                else:
                    self.parts.pop(0)
            else:
                data = part.read(size)
                if not data:
                    part.close()
                    self.parts.pop(0)
                    continue
            self._count(len(data))
            return data
        return b""

    def _count(self, n: int) -> None:
        self.sent += n
        if self.progress:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            percent = 100 * self.sent / self.length
            rate = self.sent / elapsed / 1e6
            print(
                f"\r  uploading {percent:5.1f}%  {self.sent / 1e6:8.1f} MB  {rate:6.1f} MB/s",
                end="",
                flush=True,
            )
            if self.sent >= self.length:
                print(flush=True)


def guess_content_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".gz", ".gzip")):
        return "application/gzip"
    if name.endswith((".tsv", ".tab")):
        return "text/tab-separated-values"
    return "text/csv"


def upload(
    path: Path, api: str, token: str | None = None, timeout: float = 600, quiet: bool = False
) -> dict[str, Any]:
    """Upload a file through the API and return its final GET /uploads/{id} answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    size = path.stat().st_size
    created = requests.post(
        f"{api}/uploads",
        json={"filename": path.name, "content_type": guess_content_type(path), "size": size},
        headers=headers,
        timeout=30,
    )
    if created.status_code == 401:
        raise SystemExit(
            "POST /uploads answered 401: the API wants a token. Set OFFLOAD_API_TOKEN to the "
            "one `make run` was started with: OFFLOAD_API_TOKEN=... make upload FILE=..."
        )
    if created.status_code != 201:
        raise SystemExit(f"POST /uploads answered {created.status_code}: {created.text}")
    offer = created.json()
    if not quiet:
        print(f"  upload {offer['upload_id']}: {size / 1e6:.1f} MB → {offer['key']}")
    body = MultipartBody(offer["fields"], path, progress=not quiet and size > 8 * CHUNK)
    sent = requests.post(
        offer["url"], data=body, headers={"Content-Type": body.content_type}, timeout=3600
    )
    if sent.status_code not in (200, 201, 204):
        raise SystemExit(f"S3 refused the file ({sent.status_code}): {sent.text[:500]}")
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        answer: dict[str, Any] = requests.get(
            offer["status_url"], headers=headers, timeout=30
        ).json()
        if answer["state"] != state and not quiet:
            state = answer["state"]
            print(f"  {state}")
        if answer["state"] in FINAL_STATES:
            return answer
        time.sleep(0.5)
    raise SystemExit(f"upload {offer['upload_id']} did not finish within {timeout:.0f} s")


def print_result(answer: dict[str, Any]) -> None:
    if answer["state"] != "succeeded":
        print(f"  {answer['state']}: {answer.get('error')}")
        return
    summary = answer["summary"]
    rows = summary["rows"]
    print(
        f"  rows: {rows['read']} read, {rows['written']} written, {rows['blank']} blank, "
        f"{rows['duplicate']} duplicate, {rows['ragged']['count']} ragged"
    )
    source = summary["source"]
    print(
        f"  source: {source['bytes']} bytes, {source['encoding']}, delimiter "
        f"{source['delimiter']!r}, gzip {source['compressed']}"
    )
    for column in summary.get("columns", []):
        stats = {k: v for k, v in column.items() if k not in ("name", "source_name", "type")}
        print(f"    {column['name']:<24} {column['type']:<8} {json.dumps(stats)}")
    for name, url in (answer.get("results") or {}).items():
        print(f"  {name}: {url}")


def main(path: str, api: str) -> int:
    file = Path(path)
    if not file.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    if file.stat().st_size == 0:
        print(f"{path} is empty: nothing to upload", file=sys.stderr)
        return 2
    try:
        answer = upload(file, api.rstrip("/"), os.getenv("OFFLOAD_API_TOKEN"))
    except requests.ConnectionError:
        print(
            f"nothing answers at {api}: is the local system running (`offload run`)? With "
            "other ports, export OFFLOAD_API_PORT (and OFFLOAD_MOTO_PORT)",
            file=sys.stderr,
        )
        return 2
    print_result(answer)
    return 0 if answer["state"] == "succeeded" else 1
