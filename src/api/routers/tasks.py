"""Task status."""

from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from api.models import ErrorDetail, TaskPublic
from api.security import UNAUTHORIZED
from offload.aws import tasks_table
from offload.fastapi import caller_subject

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=UNAUTHORIZED)


@router.get(
    "/{task_id}",
    name="get_task",
    responses={status.HTTP_404_NOT_FOUND: {"model": ErrorDetail, "description": "No such task."}},
)
async def get_task(task_id: UUID, request: Request) -> TaskPublic:
    record = await run_in_threadpool(tasks_table.get, task_id)
    # Another caller's task is answered exactly like a missing one: its existence stays hidden.
    if record is None or not record.visible_to(caller_subject(request)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no task {task_id}")
    return TaskPublic.model_validate(record.model_dump())
