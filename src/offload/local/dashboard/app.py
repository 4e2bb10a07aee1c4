"""The dashboard's pages: the tasks, one task, the queues, the emails sent, the uploads.

Server-rendered (Jinja2, autoescaped) with one small script that refreshes the live parts.
Local only, and guarded as if it were not: it answers only to a loopback Host header (no DNS
rebinding), its POSTs (redrive, purge) only to same-origin requests (no cross-site request
forgery), and every page carries a Content-Security-Policy that allows no inline script, no
framing of the dashboard and no remote content (an email's images included).
"""

import itertools
import json
import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import UUID

import requests
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offload import dlq
from offload.aws import uploads_s3
from offload.local.dashboard import PREFIX
from offload.models import TaskRecord, TaskState, utcnow
from offload.object_keys import parse_object_key
from offload.queues import QUEUES, queue_named
from offload.wiring import Offload

HERE = Path(__file__).parent
PAGE_SIZE = 50
MAX_KIND_CHARS = 128
MAX_CURSOR_CHARS = 256
MAX_UPLOADS = 50
MAX_OBJECTS = 2_000
LOCAL_HOSTS = ["127.0.0.1", "localhost"]
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
# Objects shown in the browser as text; any other is downloaded.
TEXT_SUFFIXES = {".csv", ".tsv", ".json", ".txt", ".log"}
_LOOKS_LIKE_HTML = re.compile(
    r"<(html|body|head|p|div|br|a|table|h[1-6]|span|strong|em|ul|ol|li|img)\b", re.IGNORECASE
)


class SecurityHeaders:
    """Adds the dashboard's headers to every response it sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def same_origin(request: Request) -> bool:
    """Whether a browser sent this request from the dashboard's own pages (Fetch Metadata, or
    the Origin header from browsers without it). A request with neither is refused too."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    return origin == f"{request.url.scheme}://{request.headers.get('host')}"


def age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((utcnow() - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


class _Text(HTMLParser):
    """The text of an HTML document, a line per block, without scripts and styles."""

    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "style", "head"}:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style", "head"}:
            self.hidden = max(0, self.hidden - 1)

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def text_of(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class Email:
    id: str
    sender: str
    to: list[str]
    subject: str
    html: str | None
    text: str

    @classmethod
    def from_moto(cls, message: dict[str, Any]) -> "Email":
        # The embedded SES keeps one body per email: the HTML part if there was one, else the
        # text part. The text of an HTML email is then derived from its HTML.
        body = str(message.get("body", ""))
        html = body if _LOOKS_LIKE_HTML.search(body) else None
        destinations = message.get("destinations") or {}
        return cls(
            id=str(message.get("id", "")),
            sender=str(message.get("source", "")),
            to=[str(a) for a in destinations.get("ToAddresses", [])],
            subject=str(message.get("subject", "")),
            html=html,
            text=text_of(html) if html is not None else body,
        )


@dataclass(frozen=True)
class Upload:
    task_id: UUID
    name: str
    size: int
    uploaded_at: datetime
    record: TaskRecord | None
    results: list[str]


def _filters(request: Request) -> tuple[TaskState | None, str | None, str | None]:
    """The task list's query: state, kind and cursor, checked (400 naming the field)."""
    query = request.query_params
    state_text = query.get("state") or None
    try:
        state = TaskState(state_text) if state_text else None
    except ValueError:
        allowed = ", ".join(s.value for s in TaskState)
        raise HTTPException(400, f"state: must be one of {allowed}") from None
    kind = query.get("kind", "").strip() or None
    if kind is not None and len(kind) > MAX_KIND_CHARS:
        raise HTTPException(400, f"kind: at most {MAX_KIND_CHARS} characters")
    cursor = query.get("cursor") or None
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise HTTPException(400, f"cursor: at most {MAX_CURSOR_CHARS} characters")
    return state, kind, cursor


class Views:
    """The dashboard's endpoints, reading and steering through `offload`."""

    def __init__(self, offload: Offload, task_log_url: str | None, moto_url: str | None) -> None:
        self.offload = offload
        self.task_log_url = task_log_url
        self.moto_url = moto_url
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters.update(age=age, pretty=pretty)
        self.templates.env.globals.update(prefix=PREFIX, states=[s.value for s in TaskState])
        # What the last redrives and purges did, shown once on the queues page they return to.
        self.notices: deque[tuple[int, str]] = deque(maxlen=20)
        self.numbers = itertools.count(1)

    def page(self, request: Request, template: str, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, template, context)

    # ------------------------------------------------------------------ tasks
    async def task_rows(self, request: Request) -> dict[str, Any]:
        state, kind, cursor = _filters(request)
        records, next_cursor = await run_in_threadpool(
            self.offload.tasks.list, None, state=state, kind=kind, limit=PAGE_SIZE, cursor=cursor
        )
        return {
            "records": records,
            "next_cursor": next_cursor,
            "state": state.value if state else "",
            "kind": kind or "",
            "cursor": cursor or "",
        }

    async def tasks(self, request: Request) -> Response:
        return self.page(request, "tasks.html", **await self.task_rows(request))

    async def tasks_live(self, request: Request) -> Response:
        return self.page(request, "_task_rows.html", **await self.task_rows(request))

    def task_log(self, task_id: UUID) -> dict[str, Any] | None:
        """What the runner kept of the task's worker log (offload.local.task_log)."""
        if not self.task_log_url:
            return None
        try:
            response = requests.get(f"{self.task_log_url}/tasks/{task_id}", timeout=2)
            response.raise_for_status()
            found: dict[str, Any] = response.json()
        except (requests.RequestException, ValueError):
            return None
        return found

    async def task_context(self, request: Request) -> dict[str, Any]:
        task_id: UUID = request.path_params["task_id"]
        record = await run_in_threadpool(self.offload.tasks.get, task_id)
        log = await run_in_threadpool(self.task_log, task_id)
        if record is None and not (log and (log["lines"] or log["message"])):
            raise HTTPException(404, f"no task {task_id}")
        message: dict[str, Any] = (log or {}).get("message") or {}
        received = message.get("body")
        body: dict[str, Any] = received if isinstance(received, dict) else {}
        lines: list[dict[str, Any]] = (log or {}).get("lines", [])
        correlation_id = body.get("correlation_id") or next(
            (line["correlation_id"] for line in lines if line.get("correlation_id")), None
        )
        return {
            "task_id": task_id,
            "record": record,
            "history": getattr(record, "history", None) or [],
            "run_at": getattr(record, "run_at", None),
            "message": message,
            # A task message's arguments; an S3 notification whole (an upload's call).
            "arguments": body.get("payload", received),
            "payload_ref": body.get("payload_ref"),
            "correlation_id": correlation_id,
            "lines": lines,
            "log_available": log is not None,
        }

    async def task(self, request: Request) -> Response:
        return self.page(request, "task.html", **await self.task_context(request))

    async def task_live(self, request: Request) -> Response:
        return self.page(request, "_task.html", **await self.task_context(request))

    # ------------------------------------------------------------------ queues
    def queue_rows(self) -> list[dict[str, Any]]:
        rows = []
        settings, sqs = self.offload.settings, self.offload.sqs
        for queue in QUEUES:
            url, dlq_url = settings.queue_url(queue.name), settings.dlq_url(queue.name)
            if not url:
                continue
            counts = sqs.counts(url)
            dead = sqs.counts(dlq_url) if dlq_url else None
            rows.append(
                {
                    "name": queue.name,
                    "queue": url.rsplit("/", 1)[-1],
                    "depth": counts.get("ApproximateNumberOfMessages", 0),
                    "in_flight": counts.get("ApproximateNumberOfMessagesNotVisible", 0),
                    "delayed": counts.get("ApproximateNumberOfMessagesDelayed", 0),
                    "dlq": None
                    if dead is None
                    else dead.get("ApproximateNumberOfMessages", 0)
                    + dead.get("ApproximateNumberOfMessagesNotVisible", 0),
                }
            )
        return rows

    async def queues(self, request: Request) -> Response:
        number = request.query_params.get("notice", "")
        notice = next((text for n, text in self.notices if str(n) == number), None)
        rows = await run_in_threadpool(self.queue_rows)
        return self.page(request, "queues.html", rows=rows, notice=notice)

    async def queues_live(self, request: Request) -> Response:
        return self.page(request, "_queue_rows.html", rows=await run_in_threadpool(self.queue_rows))

    def pair_of(self, request: Request) -> dlq.QueuePair:
        name = request.path_params["name"]
        try:
            queue_named(name)
            return dlq.queue_pairs(self.offload.settings, name)[0]
        except (KeyError, SystemExit):
            raise HTTPException(404, f"no queue {name} with a DLQ") from None

    def noticed(self, text: str) -> Response:
        number = next(self.numbers)
        self.notices.append((number, text))
        return RedirectResponse(f"{PREFIX}/queues?notice={number}", status_code=303)

    async def redrive(self, request: Request) -> Response:
        _steering(request)
        pair = self.pair_of(request)
        report = await run_in_threadpool(dlq.redrive, self.offload, pair)
        return self.noticed(report.summary(pair.name))

    async def purge(self, request: Request) -> Response:
        pair = self.pair_of(request)
        if request.method == "GET":  # the confirmation
            dlq_name = pair.dlq_url.rsplit("/", 1)[-1]
            return self.page(request, "purge.html", name=pair.name, dlq=dlq_name)
        _steering(request)
        await run_in_threadpool(dlq.purge, self.offload, pair)
        return self.noticed(f"{pair.name}: DLQ purged")

    # ------------------------------------------------------------------ emails
    def sent_emails(self) -> list[Email]:
        if not self.moto_url:
            return []
        data = requests.get(f"{self.moto_url}/moto-api/data.json", timeout=5).json()
        return [Email.from_moto(m) for m in reversed(data.get("ses", {}).get("Message", []))]

    async def emails(self, request: Request) -> Response:
        return self.page(request, "emails.html", emails=await run_in_threadpool(self.sent_emails))

    async def email(self, request: Request) -> Response:
        wanted = request.path_params["id"]
        found = [e for e in await run_in_threadpool(self.sent_emails) if e.id == wanted]
        if not found:
            raise HTTPException(404, "no such email")
        return self.page(request, "email.html", email=found[0])

    # ------------------------------------------------------------------ uploads
    def upload_rows(self) -> list[Upload]:
        bucket = self.offload.settings.upload_bucket
        if not bucket:
            return []
        objects = uploads_s3.list_objects(self.offload.clients.s3, bucket, limit=MAX_OBJECTS)
        results: dict[UUID, list[str]] = {}
        uploads = []
        for obj in objects:
            parsed = parse_object_key(obj.key)
            if parsed is not None:
                uploads.append((obj, *parsed))
                continue
            for part in PurePosixPath(obj.key).parts[:-1]:  # results/<task id>/cleaned.csv
                try:
                    results.setdefault(UUID(part), []).append(obj.key)
                except ValueError:
                    continue
        uploads.sort(key=lambda u: u[0].last_modified, reverse=True)
        return [
            Upload(
                task_id,
                name,
                obj.size,
                obj.last_modified,
                self.offload.tasks.get(task_id),
                results.get(task_id, []),
            )
            for obj, task_id, name in uploads[:MAX_UPLOADS]
        ]

    async def uploads(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.upload_rows)
        bucket = self.offload.settings.upload_bucket
        return self.page(request, "uploads.html", uploads=rows, bucket=bucket)

    async def download(self, request: Request) -> Response:
        """An object of the upload bucket: text shown as plain text, anything else downloaded."""
        key: str = request.path_params["key"]
        bucket = self.offload.settings.upload_bucket
        if not bucket:
            raise HTTPException(404, "no upload bucket")
        s3 = self.offload.clients.s3
        try:
            obj = await run_in_threadpool(uploads_s3.open_object, s3, bucket, key)
        except uploads_s3.ObjectMissingError:
            raise HTTPException(404, f"no object {key}") from None
        path = PurePosixPath(key)
        text = path.suffix.lower() in TEXT_SUFFIXES
        name = path.name.replace('"', "").replace("\\", "")
        return StreamingResponse(
            iter(lambda: obj.body.read(64 * 1024), b""),
            media_type="text/plain; charset=utf-8" if text else "application/octet-stream",
            headers={
                "Content-Disposition": f'{"inline" if text else "attachment"}; filename="{name}"'
            },
        )


def _steering(request: Request) -> None:
    """Refuse a POST that did not come from the dashboard's own pages (CSRF)."""
    if not same_origin(request):
        raise HTTPException(403, "refused: the request did not come from the dashboard's pages")


def dashboard(offload: Offload, *, task_log_url: str | None, moto_url: str | None) -> Starlette:
    """The dashboard's app, its pages under /dashboard."""
    views = Views(offload, task_log_url, moto_url)
    routes = [
        Route(PREFIX, views.tasks),
        Route(f"{PREFIX}/", views.tasks),
        Route(f"{PREFIX}/tasks/live", views.tasks_live),
        Route(f"{PREFIX}/tasks/{{task_id:uuid}}", views.task),
        Route(f"{PREFIX}/tasks/{{task_id:uuid}}/live", views.task_live),
        Route(f"{PREFIX}/queues", views.queues),
        Route(f"{PREFIX}/queues/live", views.queues_live),
        Route(f"{PREFIX}/queues/{{name}}/redrive", views.redrive, methods=["POST"]),
        Route(f"{PREFIX}/queues/{{name}}/purge", views.purge, methods=["GET", "POST"]),
        Route(f"{PREFIX}/emails", views.emails),
        Route(f"{PREFIX}/emails/{{id}}", views.email),
        Route(f"{PREFIX}/uploads", views.uploads),
        Route(f"{PREFIX}/objects/{{key:path}}", views.download),
        Mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS),
        Middleware(SecurityHeaders),
    ]
    return Starlette(routes=routes, middleware=middleware)
