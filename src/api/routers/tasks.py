"""Task status."""

from uuid import UUID

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from api.models import ErrorDetail, TaskPublic
from api.security import UNAUTHORIZED
from offload.aws import tasks_table

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=UNAUTHORIZED)


@router.get(
    "/{task_id}",
    name="get_task",
    responses={status.HTTP_404_NOT_FOUND: {"model": ErrorDetail, "description": "No such task."}},
)
async def get_task(task_id: UUID) -> TaskPublic:
    record = await run_in_threadpool(tasks_table.get, task_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no task {task_id}")
    return TaskPublic.model_validate(record.model_dump())
