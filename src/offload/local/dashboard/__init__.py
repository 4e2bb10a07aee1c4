"""The local system's dashboard, at /dashboard beside the app that `offload run` serves.

The runner starts uvicorn with create_app (a factory): it imports the app named by
OFFLOAD_LOCAL_APP (`module:attribute`) and answers /dashboard and below itself, everything else
with that app, untouched (its middleware, dependencies and lifespan). Only the local system does
this; the app deployed on Lambda never imports this package.
"""

import os

from starlette.types import ASGIApp, Receive, Scope, Send

APP_VARIABLE = "OFFLOAD_LOCAL_APP"
# Where the runner serves the workers' log lines per task (offload.local.task_log).
TASK_LOG_VARIABLE = "OFFLOAD_LOCAL_TASK_LOG_URL"
PREFIX = "/dashboard"


class WithDashboard:
    """An ASGI app: /dashboard and below go to `dashboard`, the rest (and lifespan) to `app`."""

    def __init__(self, app: ASGIApp, dashboard: ASGIApp) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.dashboard(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app() -> ASGIApp:
    """uvicorn's factory (`--factory`): the app of OFFLOAD_LOCAL_APP, with the dashboard."""
    from uvicorn.importer import import_from_string

    from offload.local.dashboard.app import dashboard
    from offload.wiring import build

    app = import_from_string(os.environ[APP_VARIABLE])
    views = dashboard(
        build(),
        task_log_url=os.getenv(TASK_LOG_VARIABLE),
        moto_url=os.getenv("AWS_ENDPOINT_URL"),
    )
    return WithDashboard(app, views)
