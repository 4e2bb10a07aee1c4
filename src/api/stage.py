"""HTTP API puts a named stage in the path it sends to Lambda: /dev/emails, not /emails.

Mangum passes that path on as is, so FastAPI would answer 404 to every route. This ASGI
wrapper serves the stage as the ASGI root_path instead: routes match, and URLs the app builds
(a task's status URL) keep the /dev prefix that the client must call. The $default stage is
served at the root and is left alone.
"""

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class ApiGatewayStage:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            event: dict[str, Any] = scope.get("aws.event") or {}
            stage = (event.get("requestContext") or {}).get("stage")
            path: str = scope["path"]
            if stage and stage != "$default" and (path + "/").startswith(f"/{stage}/"):
                scope = {**scope, "root_path": scope.get("root_path", "") + f"/{stage}"}
        await self.app(scope, receive, send)
