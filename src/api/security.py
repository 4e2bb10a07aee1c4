"""The API's own guards: a JWT must name its caller, an optional bearer token, and a request
body size limit.

On AWS the HTTP API's JWT authorizer checks every route but /health before Lambda runs; the
app then refuses a token without a `sub` (401), since the caller owns what it creates. The
token check here is off unless OFFLOAD_API_TOKEN is set: that is for the local system, or for
any deployment without an authorizer in front. Set but empty, it is a settings error.
"""

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.models import ErrorDetail
from example_app.settings import get_settings
from offload.fastapi import OffloadDep, caller_subject

# Routes anyone may call, token or not (load balancers and uptime checks).
PUBLIC_PATHS = frozenset({"/health"})

_bearer = HTTPBearer(
    auto_error=False,
    description="OFFLOAD_API_TOKEN locally; on AWS a JWT checked by API Gateway.",
)


async def require_api_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    offload: OffloadDep,
) -> None:
    """Refuse the call with 401 unless it carries the configured token (if one is), and
    unless its JWT (under API Gateway) names the caller (`sub`)."""
    expected = offload.settings.api_token
    route = request.scope.get("route")
    if getattr(route, "path", None) in PUBLIC_PATHS:
        return
    caller_subject(request)  # 401 for a JWT without `sub`, before any route runs
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    # Constant time: the comparison must not reveal how much of a guess was right.
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"the request body is larger than {limit} bytes",
        )


class BodySizeLimit:
    """ASGI middleware: 413 for a body over OFFLOAD_MAX_BODY_BYTES, declared or streamed.

    A Content-Length over the limit is refused before the app runs. A chunked body is counted
    as the app reads it; the read that crosses the limit raises a 413 HTTPException, which
    FastAPI's exception middleware turns into the response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = get_settings().max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, counting_receive, send)


async def _reject(send: Send, limit: int) -> None:
    body = ErrorDetail(detail=f"the request body is larger than {limit} bytes")
    payload = body.model_dump_json().encode()
    await send(
        {
            "type": "http.response.start",
            "status": status.HTTP_413_CONTENT_TOO_LARGE,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorDetail, "description": description}


# Error responses to declare on routes, so that the OpenAPI schema (and schemathesis) knows them.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    status.HTTP_401_UNAUTHORIZED: _error(
        "Missing or invalid bearer token, or a JWT without a subject (`sub`)."
    )
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_400_BAD_REQUEST: _error("The request body could not be parsed."),
    status.HTTP_413_CONTENT_TOO_LARGE: _error("The request body is over the size limit."),
}
NOT_QUEUED: dict[int | str, dict[str, Any]] = {
    status.HTTP_503_SERVICE_UNAVAILABLE: _error("SQS did not take the task; retry.")
}
