"""Response models (requests are validated by the task argument models and offload.emails)."""

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from offload.models import TaskState


class TaskAccepted(BaseModel):
    task_id: UUID
    state: TaskState = TaskState.QUEUED
    status_url: str


class TaskPublic(BaseModel):
    task_id: UUID
    kind: str
    state: TaskState
    attempts: int
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    result: Any = None


class Health(BaseModel):
    status: str = "ok"
    stage: str


class ErrorDetail(BaseModel):
    detail: Any
