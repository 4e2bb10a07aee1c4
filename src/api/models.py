"""Response models (requests are validated by the task argument models and example_app.emails)."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Request
from pydantic import AfterValidator, AwareDatetime, BaseModel

from api.urls import url_for
from offload.models import TaskState, utcnow
from offload.scheduling import run_at_of


def _at_most_a_year_ahead(value: datetime) -> datetime:
    run_at_of(value, utcnow())  # TooFarAheadError is a ValueError: a 422 naming the field
    return value


# When to send: an RFC 3339 time with its offset (2026-12-24T18:00:00Z); a time in the past
# means now, more than a year ahead is refused (EventBridge Scheduler's limit).
SendAt = Annotated[AwareDatetime, AfterValidator(_at_most_a_year_ahead)]


class TaskAccepted(BaseModel):
    task_id: UUID
    state: TaskState = TaskState.QUEUED
    status_url: str
    # When a scheduled task runs (the request's send_at); absent for a task queued now.
    run_at: datetime | None = None

    @classmethod
    def of(cls, request: Request, task_id: UUID, run_at: datetime | None = None) -> "TaskAccepted":
        """The answer to a request that queued `task_id` (to run at `run_at`, if given and
        ahead), with the task's status URL."""
        later = run_at is not None and run_at > utcnow()
        return cls(
            task_id=task_id,
            state=TaskState.SCHEDULED if later else TaskState.QUEUED,
            status_url=url_for(request, "get_task", task_id=task_id),
            run_at=run_at if later else None,
        )


class Health(BaseModel):
    status: str = "ok"
    stage: str


class ErrorDetail(BaseModel):
    detail: Any
