"""Task status over HTTP: the route a client polls after its request was answered 202.

    from offload.status import router as task_status

    app.include_router(task_status)    # GET /tasks/{task_id}

A task is shown to the caller who created it (the JWT `sub` that API Gateway's authorizer
checked), or to anyone if it has no owner (no JWT: the local system, plain uvicorn). Another
caller's task is answered exactly like a missing one (404): its existence stays hidden.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from offload.fastapi import OffloadDep, caller_subject
from offload.models import TaskState, Transition, unrecorded, utcnow


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


router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get(
    "/{task_id}",
    name="get_task",
    responses={
        status.HTTP_404_NOT_FOUND: {"model": TaskNotFound, "description": "No such task."},
        status.HTTP_503_SERVICE_UNAVAILABLE: {
            "model": TaskNotFound,
            "description": "Task status is not recorded here (no OFFLOAD_TASKS_TABLE).",
        },
    },
)
async def get_task(task_id: UUID, request: Request, offload: OffloadDep) -> TaskPublic:
    """The task's state: queued → running → succeeded, or retrying, dead, failed (with why),
    scheduled (until `run_at`) or cancelled; with its history."""
    if not offload.settings.tasks_table:
        # Plain uvicorn with nothing configured: the tasks ran in-process, unrecorded.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="task status is not recorded: OFFLOAD_TASKS_TABLE is not set "
            "(in-process mode; run the local system with `offload run` for durable tasks)",
        )
    subject = caller_subject(request)
    record = await run_in_threadpool(offload.tasks.get, task_id)
    if record is None:
        retention = offload.settings.message_retention_seconds
        record = unrecorded(task_id, subject, utcnow(), retention)
    if record is None or not record.visible_to(subject):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no task {task_id}")
    return TaskPublic.model_validate(record.model_dump())
