"""`offload run --built`'s HTTP API: each request becomes the HTTP API event (payload 2.0, the
$default stage) that API Gateway sends, for the built API function under the emulator.

One instance serves one request at a time, as one Lambda instance does; the local API has one.
"""

import base64
import json
import logging
import signal
import threading
import time
import uuid
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from offload.local.emulator import Emulator

BAD_GATEWAY = b'{"message":"Internal Server Error"}'


def http_api_event(request: Request) -> dict[str, Any]:
    """The event HTTP API sends for this request (payload format 2.0, stage $default)."""
    body = request.get_data()
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.lower() != "cookie":
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    # As API Gateway adds them (the app builds its URLs from them).
    headers["x-forwarded-for"] = request.remote_addr or "127.0.0.1"
    headers["x-forwarded-proto"] = request.scheme
    headers["x-forwarded-port"] = str(request.environ.get("SERVER_PORT", ""))
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": request.query_string.decode(),
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": request.host,
            "domainPrefix": request.host.split(".")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "sourceIp": request.remote_addr or "127.0.0.1",
                "userAgent": request.headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": bool(body),
    }
    if request.args:
        event["queryStringParameters"] = {
            k: ",".join(request.args.getlist(k)) for k in request.args
        }
    if "cookie" in request.headers:
        event["cookies"] = [c.strip() for c in request.headers["cookie"].split(";")]
    if body:
        event["body"] = base64.b64encode(body).decode()
    return event


def http_response(payload: Any) -> Response:
    """The HTTP response API Gateway makes of a function's answer (payload format 2.0)."""
    if not isinstance(payload, dict) or "statusCode" not in payload:
        return Response(BAD_GATEWAY, status=502, content_type="application/json")
    body = payload.get("body") or ""
    data = base64.b64decode(body) if payload.get("isBase64Encoded") else body.encode()
    response = Response(data, status=int(payload["statusCode"]))
    for name, value in (payload.get("headers") or {}).items():
        response.headers[name] = value
    for cookie in payload.get("cookies") or []:
        response.headers.add("set-cookie", cookie)
    return response


class Gateway:
    """A WSGI app in front of one emulated instance of the API function."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        event = json.dumps(http_api_event(request)).encode()
        with self.lock:
            result = self.emulator.invoke(event)
        if result.error:
            response = Response(BAD_GATEWAY, status=502, content_type="application/json")
        else:
            response = http_response(result.json())
        return response(environ, start_response)


def serve(emulator: Emulator, host: str, port: int) -> None:
    """Serve the API until the process is stopped."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = make_server(host, port, Gateway(emulator), threaded=True)
    # The runner stops its children with SIGTERM: the emulator goes with this process.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    emulator.start()
    try:
        server.serve_forever()
    finally:
        emulator.stop()
