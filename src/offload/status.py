"""Task status over HTTP: the route a client polls after its request was answered 202, and
the caller's tasks.

    from offload.status import router as task_status

    app.include_router(task_status)    # GET /tasks/{task_id}, GET /tasks

A task is shown to the caller who created it (the JWT `sub` that API Gateway's authorizer
checked), or to anyone if it has no owner (no JWT: the local system, plain uvicorn). Another
caller's task is answered exactly like a missing one (404): its existence stays hidden.
"""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from offload.aws.tasks_table import MAX_CURSOR_CHARS, MAX_LIST_LIMIT, InvalidCursorError
from offload.fastapi import OffloadDep, caller_subject
from offload.models import TaskState
from offload.wiring import Offload


class TaskPublic(BaseModel):
    task_id: UUID
    kind: str
    state: TaskState
    attempts: int
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    result: Any = None
    # When a scheduled task runs (it stays `scheduled` until a worker takes it).
    run_at: datetime | None = None


class TaskNotFound(BaseModel):
    detail: str


class TaskPage(BaseModel):
    tasks: list[TaskPublic]
    # Pass it as `cursor` for the next page; null after the last one.
    next_cursor: str | None = None


router = APIRouter(prefix="/tasks", tags=["tasks"])

NOT_RECORDED = {
    "model": TaskNotFound,
    "description": "Task status is not recorded here (no OFFLOAD_TASKS_TABLE).",
}


def _recorded(offload: Offload) -> None:
    if not offload.settings.tasks_table:
        # Plain uvicorn with nothing configured: the tasks ran in-process, unrecorded.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="task status is not recorded: OFFLOAD_TASKS_TABLE is not set "
            "(in-process mode; run the local system with `offload run` for durable tasks)",
        )


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
    """Your tasks, newest first, a page at a time (every task when the API has no callers'
    identities: the local system without a JWT). A page filtered by state or kind may hold
    fewer than `limit` tasks and still have a next one."""
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
    return TaskPage(
        tasks=[TaskPublic.model_validate(r.model_dump()) for r in records],
        next_cursor=next_cursor,
    )


@router.get(
    "/{task_id}",
    name="get_task",
    responses={
        status.HTTP_404_NOT_FOUND: {"model": TaskNotFound, "description": "No such task."},
        status.HTTP_503_SERVICE_UNAVAILABLE: NOT_RECORDED,
    },
)
async def get_task(task_id: UUID, request: Request, offload: OffloadDep) -> TaskPublic:
    """The task's state: queued → running → succeeded, or retrying, dead, failed (with why)."""
    _recorded(offload)
    record = await run_in_threadpool(offload.tasks.get, task_id)
    if record is None or not record.visible_to(caller_subject(request)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no task {task_id}")
    return TaskPublic.model_validate(record.model_dump())
