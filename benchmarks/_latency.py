"""The latency model: the embedded AWS behind a per-service network delay, counting requests.

moto answers from the same machine, spending CPU where AWS spends network time; against it,
overlapping calls looks useless and every call looks cheap. This reverse proxy, in its own
process, sits between the SDK and moto's server: each request waits (asynchronously: the
client's process spends no CPU on it, and concurrent requests wait side by side) for its
service's delay, then goes on to moto unchanged, and the answer streams back. No library code is
touched: the code under test only gets the proxy as its AWS_ENDPOINT_URL.

Each request is counted by caller (the access key id), service and operation:
- the service from the SigV4 credential scope (`Authorization` header, or the presigned URL's
  `X-Amz-Credential`); a browser-style form POST with no credential outside its body is S3's;
- the operation from `X-Amz-Target` (JSON protocols: SQS, DynamoDB), `Action` (query
  protocols: SES v1), or else the REST path matched against botocore's own service model
  (S3, SES v2): the most specific operation whose method, path and query keys fit.

`python -m benchmarks._latency --upstream URL --port PORT --delays sqs=8,dynamodb=5` serves it;
`GET /_latency/counts` answers the counts, `POST /_latency/reset` clears them. Delays are one
figure per request (a round trip inside one region), with no bandwidth model: a 16 MB S3 part
waits as long as a 1 KB one.
"""

import argparse
import asyncio
import functools
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

# Milliseconds per request: one region, from a Lambda function in the same region.
DEFAULT_DELAYS_MS = {"sqs": 8.0, "dynamodb": 5.0, "ses": 40.0, "s3": 15.0}
ENV = "OFFLOAD_BENCH_LATENCY"  # "sqs=8,dynamodb=5,ses=40,s3=15", or "off"
CONTROL = "/_latency/"  # no S3 bucket name starts with "_"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/[^/]+/([^/]+)/aws4_request")
# REST services, by signing name: the botocore models whose paths they answer.
_REST_MODELS = {"s3": ("s3",), "ses": ("sesv2",)}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}

Counts = dict[str, dict[str, dict[str, int]]]  # caller → service → operation → requests


# ------------------------------------------------------------------------------ configuration
def parse_delays(spec: str) -> dict[str, float]:
    """`sqs=8,dynamodb=5` → {"sqs": 8.0, "dynamodb": 5.0}, over the defaults; "" = defaults."""
    delays = dict(DEFAULT_DELAYS_MS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        service, _, value = part.partition("=")
        if not value:
            raise ValueError(f"{ENV}: expected service=milliseconds, got {part!r}")
        delays[service.strip().lower()] = float(value)
    return delays


def configured() -> dict[str, float] | None:
    """The latency model's delays from OFFLOAD_BENCH_LATENCY; None when it is "off"."""
    spec = os.environ.get(ENV, "")
    return None if spec.strip().lower() == "off" else parse_delays(spec)


def describe(delays: dict[str, float]) -> str:
    return ", ".join(f"{service} {ms:g} ms" for service, ms in sorted(delays.items()))


# ------------------------------------------------------------------------------ classification
@dataclass(frozen=True)
class _Route:
    name: str
    method: str
    path: re.Pattern[str]
    query_keys: frozenset[str]  # literal in the URI, or required query string members
    headers: frozenset[str]  # required header members (CopyObject: x-amz-copy-source)
    literal_chars: int


def _path_pattern(template: str) -> tuple[re.Pattern[str], int]:
    parts, literal, position = [], 0, 0
    for match in re.finditer(r"\{([^}]+)\}", template):
        text = template[position : match.start()]
        parts.append(re.escape(text))
        literal += len(text)
        parts.append(".+" if match.group(1).endswith("+") else "[^/]+")
        position = match.end()
    parts.append(re.escape(template[position:]))
    literal += len(template) - position
    return re.compile("".join(parts) + "/?"), literal


@functools.cache
def _routes(model_name: str) -> tuple[_Route, ...]:
    import botocore.session

    model = botocore.session.get_session().get_service_model(model_name)
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        uri = operation.http["requestUri"]
        path, _, query = uri.partition("?")
        keys = {key.partition("=")[0] for key in query.split("&") if key}
        headers: set[str] = set()
        shape = operation.input_shape
        if shape is not None:
            for member_name in shape.required_members:
                serialization = shape.members[member_name].serialization
                location = serialization.get("location")
                if location == "querystring":
                    keys.add(serialization.get("name", member_name))
                elif location == "header":
                    headers.add(serialization.get("name", member_name).lower())
        pattern, literal = _path_pattern(path)
        method = operation.http["method"]
        routes.append(_Route(name, method, pattern, frozenset(keys), frozenset(headers), literal))
    return tuple(routes)


def rest_operation(
    model_name: str, method: str, path: str, query_keys: set[str], headers: set[str]
) -> str | None:
    """The operation of a REST request: the most specific route of the model that fits."""
    fits = [
        route
        for route in _routes(model_name)
        if route.method == method
        and route.query_keys <= query_keys
        and route.headers <= headers
        and route.path.fullmatch(path)
    ]
    if not fits:
        return None
    best = max(fits, key=lambda r: (len(r.query_keys) + len(r.headers), r.literal_chars))
    return best.name


def classify(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> tuple[str, str, str]:
    """(caller, service, operation) of one request."""
    params = parse_qs(query, keep_blank_values=True)
    credential = (
        headers.get("authorization", "")
        or "Credential=" + (params.get("X-Amz-Credential", [""])[0])
    )
    found = _CREDENTIAL.search(credential)
    content_type = headers.get("content-type", "")
    if found:
        caller, service = found.group(1), found.group(2)
    elif "AWSAccessKeyId" in params:  # an S3 URL presigned with signature version 2
        caller, service = params["AWSAccessKeyId"][0], "s3"
    elif method == "POST" and content_type.startswith("multipart/form-data"):
        return "browser", "s3", "PostObject"  # a presigned POST: its policy is in the form
    else:
        return "anonymous", "unknown", f"{method} {path}"
    target = headers.get("x-amz-target")
    if target:
        return caller, service, target.rsplit(".", 1)[-1]
    action = params.get("Action", [""])[0]
    if not action and content_type.startswith("application/x-www-form-urlencoded"):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
    if action:
        return caller, service, action
    for model in _REST_MODELS.get(service, (service,)):
        try:
            name = rest_operation(model, method, path, set(params), set(headers))
        except Exception:  # no botocore model of that name
            name = None
        if name:
            return caller, service, name
    return caller, service, f"{method} {path}"


# ------------------------------------------------------------------------------ the proxy
class LatencyProxy:
    """An ASGI app: delay, count, forward to `upstream`, stream the answer back."""

    def __init__(self, upstream: str, delays_ms: dict[str, float]) -> None:
        self.upstream = upstream.rstrip("/")
        self.delays = {service: ms / 1000 for service, ms in delays_ms.items()}
        self.counts: Counts = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
                self.client = httpx.AsyncClient(timeout=None, limits=limits)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        query = scope["query_string"].decode("latin-1")
        if path.startswith(CONTROL):
            await self._control(method, path, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        lookup = {k.lower(): v for k, v in headers}
        if not path.startswith("/moto-api"):
            caller, service, operation = classify(method, path, query, lookup, bytes(body))
            self.counts[caller][service][operation] += 1
            delay = self.delays.get(service, 0.0)
            if delay:
                await asyncio.sleep(delay)
        assert self.client is not None
        url = self.upstream + scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        forwarded = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
        request = self.client.build_request(method, url, headers=forwarded, content=bytes(body))
        response = await self.client.send(request, stream=True)
        try:
            answer = [
                (k, v)
                for k, v in response.headers.raw
                if k.lower() not in {b"connection", b"keep-alive", b"transfer-encoding"}
            ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": answer}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _control(self, method: str, path: str, send: Any) -> None:
        if path == f"{CONTROL}reset" and method == "POST":
            self.counts.clear()
            payload: Any = {"reset": True}
        else:
            payload = self.counts
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


# ------------------------------------------------------------------------------ client side
@dataclass
class Endpoint:
    """Where the code under test sends its AWS requests, and what it sent (with the model)."""

    url: str
    moto_url: str
    delays: dict[str, float] | None  # None: moto directly, nothing counted

    def counts(self) -> Counts:
        if self.delays is None:
            raise RuntimeError("requests are counted behind the latency model only")
        response = httpx.get(f"{self.url}{CONTROL}counts", timeout=10)
        response.raise_for_status()
        counts: Counts = response.json()
        return counts

    def reset(self) -> None:
        if self.delays is not None:
            httpx.post(f"{self.url}{CONTROL}reset", timeout=10).raise_for_status()


def by_operation(counts: Counts, caller: str | None = None) -> dict[str, int]:
    """{"dynamodb.UpdateItem": n, ...} over one caller (or all)."""
    totals: dict[str, int] = defaultdict(int)
    for who, services in counts.items():
        if caller is not None and who != caller:
            continue
        for service, operations in services.items():
            for operation, n in operations.items():
                totals[f"{service}.{operation}"] += n
    return dict(sorted(totals.items()))


@contextmanager
def latency_proxy(moto_url: str, delays: dict[str, float], log: Any = None) -> Iterator[str]:
    """The proxy in its own process in front of `moto_url`; yields its URL."""
    from benchmarks._common import SERVERS, child_env, free_port, spawn, stop, wait_http

    port = free_port()
    spec = ",".join(f"{service}={ms:g}" for service, ms in delays.items())
    args = ["-m", "benchmarks._latency", "--upstream", moto_url, "--port", str(port)]
    process = spawn([*args, "--delays", spec], child_env(), log)
    url = f"http://127.0.0.1:{port}"
    SERVERS[url] = process.pid
    try:
        wait_http(f"{url}{CONTROL}counts", process)
        yield url
    finally:
        SERVERS.pop(url, None)
        stop(process)


@contextmanager
def aws_endpoint(delays: dict[str, float] | None, log: Any = None) -> Iterator[Endpoint]:
    """moto's server in its own process, behind the latency model unless `delays` is None."""
    from benchmarks._common import moto_server

    with moto_server(log) as moto_url:
        if delays is None:
            yield Endpoint(moto_url, moto_url, None)
            return
        with latency_proxy(moto_url, delays) as url:
            yield Endpoint(url, moto_url, delays)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._latency")
    parser.add_argument("--upstream", required=True, help="moto's server URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delays", default="", help="service=ms,... over the defaults")
    options = parser.parse_args(argv)
    import uvicorn

    upstream = urlsplit(options.upstream)
    if upstream.hostname not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("the upstream must be on loopback")
    app = LatencyProxy(options.upstream, parse_delays(options.delays))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=options.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
