"""What the local system's workers said about each task, for the dashboard: bounded, in memory.

The runner reads every line its worker processes print. A JSON log line with a `task_id`
(Powertools' structured logs) is kept under that task, and so is the message a poller received
for it (the task's arguments): the last MAX_LINES lines of the last MAX_TASKS tasks, each line
cut at MAX_LINE_CHARS. The API process, which serves the dashboard, reads them over loopback
from serve(): GET /tasks/<task id> answers {"message": ..., "lines": [...]}.
"""

import json
import re
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from offload.worker.sources import s3_task_ids

MAX_TASKS = 1_000
MAX_LINES = 200
MAX_LINE_CHARS = 8_000
# A poller's line for each message it received (offload.local.poller): not a log line.
RECEIVED_KEY = "offload_local_received"
_TASK_PATH = re.compile(r"^/tasks/([0-9a-fA-F-]{36})$")


@dataclass
class _Entry:
    message: dict[str, Any] | None = None
    lines: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))


def _bounded(record: dict[str, Any]) -> dict[str, Any]:
    """The record, or if it is longer than MAX_LINE_CHARS its main keys, each cut short."""
    if len(json.dumps(record, default=str)) <= MAX_LINE_CHARS:
        return record
    kept = ("timestamp", "level", "message", "task_id", "kind", "attempt", "error", "reason")
    cut = MAX_LINE_CHARS // (2 * len(kept))
    return {key: str(record[key])[:cut] for key in kept if key in record} | {"truncated": True}


def task_ids_of(body: str) -> list[str]:
    """The tasks an SQS message body stands for: a task message's, or an S3 notification's."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    if isinstance(parsed, dict) and isinstance(parsed.get("task_id"), str):
        return [parsed["task_id"]]
    return [str(task_id) for task_id in s3_task_ids(body)]


class TaskLog:
    def __init__(self, max_tasks: int = MAX_TASKS) -> None:
        self.max_tasks = max_tasks
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, task_id: str) -> _Entry:
        entry = self._entries.get(task_id)
        if entry is None:
            entry = self._entries[task_id] = _Entry()
            while len(self._entries) > self.max_tasks:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(task_id)
        return entry

    def add(self, record: dict[str, Any], source: str) -> bool:
        """Keep one JSON line of worker `source` if it is about a task; False if it is not."""
        if record.get(RECEIVED_KEY) is True:
            body = str(record.get("body", ""))
            message: dict[str, Any] = {"queue": record.get("queue"), "source": source}
            try:
                message["body"] = json.loads(body[:MAX_LINE_CHARS])
            except ValueError:
                message["body"] = body[:MAX_LINE_CHARS]
            with self._lock:
                for task_id in task_ids_of(body):
                    self._entry(task_id.lower()).message = message
            return True
        about = record.get("task_id")
        if not isinstance(about, str):
            return False
        with self._lock:
            self._entry(about.lower()).lines.append({**_bounded(record), "source": source})
        return True

    def get(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            entry = self._entries.get(task_id.lower(), _Entry())
            return {"message": entry.message, "lines": list(entry.lines)}


def serve(log: TaskLog, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A read-only HTTP server for `log` on a free port of `host`, serving in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            match = _TASK_PATH.match(self.path)
            if match is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            body = json.dumps(log.get(match.group(1)), default=str).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="task-log", daemon=True).start()
    return server
