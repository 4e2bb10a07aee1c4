"""Tasks over HTTP: the route a client polls after its request was answered 202, the caller's
tasks, cancel and retry.

    from offload.status import router as task_status

    app.include_router(task_status)
    # GET /tasks/{task_id}, GET /tasks, DELETE /tasks/{task_id}, POST /tasks/{task_id}/retry

A task is shown to the caller who created it (the JWT `sub` that API Gateway's authorizer
checked), or to anyone if it has no owner (no JWT: the local system, plain uvicorn). Another
caller's task is answered exactly like a missing one (404): its existence stays hidden.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from offload import control
from offload.aws.tasks_table import MAX_CURSOR_CHARS, MAX_LIST_LIMIT, InvalidCursorError
from offload.control import NoSuchTaskError
from offload.errors import EnqueueError
from offload.fastapi import OffloadDep, caller_subject
from offload.models import TaskRecord, TaskState, Transition
from offload.wiring import Offload


class TaskPublic(BaseModel):
    task_id: UUID
    kind: str | None = Field(
        description="The task's name; null while no worker has recorded the task yet."
    )
    state: TaskState
    attempts: int
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    result: Any = None
    run_at: datetime | None = Field(default=None, description="When a scheduled task is due.")
    history: list[Transition] = Field(
        default_factory=list,
        description="The task's transitions, oldest first (state, time, attempt, error).",
    )


class TaskNotFound(BaseModel):
    detail: str


class TaskConflict(BaseModel):
    detail: str
    state: TaskState = Field(description="The state the task is in.")


class TaskPage(BaseModel):
    tasks: list[TaskPublic]
    next_cursor: str | None = Field(
        default=None, description="Pass it as `cursor` for the next page; null after the last."
    )


router = APIRouter(prefix="/tasks", tags=["tasks"])

NOT_FOUND = {"model": TaskNotFound, "description": "No such task (or not yours)."}
NOT_RECORDED = {
    "model": TaskNotFound,
    "description": "Task status is not recorded here (no OFFLOAD_TASKS_TABLE).",
}


def _conflict(detail: str, state: TaskState) -> JSONResponse:
    body = TaskConflict(detail=detail, state=state)
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_409_CONFLICT)


def _recorded(offload: Offload) -> None:
    if not offload.settings.tasks_table:
        # Plain uvicorn with nothing configured: the tasks ran in-process, unrecorded.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="task status is not recorded: OFFLOAD_TASKS_TABLE is not set "
            "(in-process mode; run the local system with `offload run` for durable tasks)",
        )


async def _run(action: Callable[..., TaskRecord], *args: Any) -> TaskRecord:
    """Run a control action in the thread pool; NoSuchTaskError is a 404."""
    try:
        return await run_in_threadpool(action, *args)
    except NoSuchTaskError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc


def _public(record: TaskRecord) -> TaskPublic:
    return TaskPublic.model_validate(record.model_dump())


@router.get(
    "",
    name="list_tasks",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: NOT_RECORDED},
)
async def list_tasks(
    request: Request,
    offload: OffloadDep,
    *,
    state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
    kind: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Only tasks of this kind.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="Tasks per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_CHARS, description="The next_cursor of the previous page."),
    ] = None,
) -> TaskPage:
    """Your tasks, newest first, a page at a time (without a caller identity, the tasks that
    have no owner: every task of the local system without a JWT). A task is listed once it has
    a record: scheduled tasks at once, others when a worker takes them. A page filtered by state
    or kind may hold fewer than `limit` tasks and still have a next one."""
    _recorded(offload)
    owner = caller_subject(request)
    try:
        records, next_cursor = await run_in_threadpool(
            lambda: offload.tasks.list(owner, state=state, kind=kind, limit=limit, cursor=cursor)
        )
    except InvalidCursorError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}],
        ) from exc
    return TaskPage(tasks=[_public(r) for r in records], next_cursor=next_cursor)


@router.get(
    "/{task_id}",
    name="get_task",
    responses={
        status.HTTP_404_NOT_FOUND: NOT_FOUND,
        status.HTTP_503_SERVICE_UNAVAILABLE: NOT_RECORDED,
    },
)
async def get_task(task_id: UUID, request: Request, offload: OffloadDep) -> TaskPublic:
    """The task's state: queued → running → succeeded, or retrying, dead, failed (with why),
    scheduled (until `run_at`) or cancelled; with its history."""
    _recorded(offload)
    return _public(await _run(control.find, offload, task_id, caller_subject(request)))


@router.delete(
    "/{task_id}",
    name="cancel_task",
    response_model=TaskPublic,
    responses={
        status.HTTP_404_NOT_FOUND: NOT_FOUND,
        status.HTTP_409_CONFLICT: {
            "model": TaskConflict,
            "description": "The task is running or finished: it cannot be cancelled.",
        },
        status.HTTP_503_SERVICE_UNAVAILABLE: NOT_RECORDED,
    },
)
async def cancel_task(
    task_id: UUID, request: Request, offload: OffloadDep
) -> TaskPublic | JSONResponse:
    """Cancel a task that has not started (queued, scheduled or retrying): it becomes
    `cancelled`, its one-time schedule is deleted, and a worker that receives its message
    drops it."""
    _recorded(offload)
    try:
        return _public(await _run(control.cancel, offload, task_id, caller_subject(request)))
    except control.RefusedError as refused:
        return _conflict(refused.detail, refused.state)


@router.post(
    "/{task_id}/retry",
    name="retry_task",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskPublic,
    responses={
        status.HTTP_404_NOT_FOUND: NOT_FOUND,
        status.HTTP_409_CONFLICT: {
            "model": TaskConflict,
            "description": "The task is not dead, or its message was not kept.",
        },
        status.HTTP_503_SERVICE_UNAVAILABLE: {
            "model": TaskNotFound,
            "description": "Not recorded here, or SQS did not take the message; retry.",
        },
    },
)
async def retry_task(
    task_id: UUID, request: Request, offload: OffloadDep
) -> TaskPublic | JSONResponse:
    """Queue a dead task again, under the same id, with the message it died with; its history
    keeps the reason it died."""
    _recorded(offload)
    try:
        return _public(await _run(control.retry, offload, task_id, caller_subject(request)))
    except control.RefusedError as refused:
        return _conflict(refused.detail, refused.state)
    except EnqueueError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc), headers={"Retry-After": "1"}
        ) from exc
