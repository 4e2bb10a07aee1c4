"""Response models (requests are validated by the task argument models and example_app.emails)."""

from typing import Any
from uuid import UUID

from fastapi import Request
from pydantic import BaseModel

from api.urls import url_for
from offload.models import TaskState


class TaskAccepted(BaseModel):
    task_id: UUID
    state: TaskState = TaskState.QUEUED
    status_url: str

    @classmethod
    def of(cls, request: Request, task_id: UUID) -> "TaskAccepted":
        """The answer to a request that queued `task_id`, with the task's status URL."""
        return cls(task_id=task_id, status_url=url_for(request, "get_task", task_id=task_id))


class Health(BaseModel):
    status: str = "ok"
    stage: str


class ErrorDetail(BaseModel):
    detail: Any
