"""Composes the app: routers and error mapping. `handler` is the Lambda entry point."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from mangum import Mangum

from api.routers import emails, health, notifications, uploads
from api.security import UNAUTHORIZED, BodySizeLimit, require_api_token
from api.stage import ApiGatewayStage
from offload.errors import EnqueueError
from offload.fastapi import CorrelationIdHeader
from offload.registry import InvalidTaskArgumentsError
from offload.snapstart import register as register_snapstart_hooks
from offload.status import router as task_status
from offload.wiring import build


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Compose Offload before serving: invalid settings (an empty OFFLOAD_API_TOKEN) stop uvicorn
    # from starting instead of failing on each call. Mangum runs with lifespan="off", where
    # get_offload composes it at the first request, and the same error answers every call with
    # 500 (never an open API).
    app.state.offload = build()
    yield


app = FastAPI(
    title="Offload",
    summary="Durable background tasks: every POST is queued on SQS and answered 202.",
    version="0.1.0",
    # Every route needs the bearer token when one is configured, except PUBLIC_PATHS.
    dependencies=[Depends(require_api_token)],
    lifespan=lifespan,
)
app.add_middleware(BodySizeLimit)
app.add_middleware(CorrelationIdHeader)
app.include_router(health.router)
app.include_router(notifications.router)
app.include_router(emails.router)
app.include_router(task_status, responses=UNAUTHORIZED)  # GET /tasks/{task_id}
app.include_router(uploads.router)


@app.exception_handler(InvalidTaskArgumentsError)
async def invalid_task_arguments(_: Request, exc: InvalidTaskArgumentsError) -> JSONResponse:
    detail = [{**error, "loc": ["task", exc.kind, *error["loc"]]} for error in exc.errors]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": detail}
    )


@app.exception_handler(EnqueueError)
async def enqueue_failed(_: Request, exc: EnqueueError) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": f"the task could not be queued, try again: {exc}"},
        headers={"Retry-After": "1"},
    )


# ApiGatewayStage: a named HTTP API stage arrives in the path (/dev/emails); see api/stage.py.
handler = Mangum(ApiGatewayStage(app), lifespan="off")

# With SnapStart on (template parameter ApiSnapStart): what to prime before the snapshot, and
# what to renew after a restore (offload.snapstart). Outside the Lambda runtime: nothing.
register_snapstart_hooks()
