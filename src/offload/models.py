"""The task contract shared by the API and the workers."""

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offload.scheduling import ScheduleFiring, firing_task_id
from offload.task_ids import issued_at, issued_to, new_task_id

# The longest error a history entry keeps (the record's `error` keeps more).
MAX_HISTORY_ERROR = 300


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskState(StrEnum):
    # Waiting for a later time (`run_at`): a delayed message or a one-time schedule.
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    # The task's input can never succeed (for example an empty upload); the user is told why.
    FAILED = "failed"
    # The message reached the dead-letter queue; an operator can inspect and redrive it.
    DEAD = "dead"
    # Cancelled before it started (DELETE /tasks/{id}); a worker drops its message.
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED}


class TaskMessage(BaseModel):
    """The body of every SQS task message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    task_id: UUID = Field(default_factory=lambda: new_task_id(None))
    kind: str = Field(min_length=1, max_length=128)
    payload: dict[str, Any] = Field(default_factory=dict)
    enqueued_at: datetime = Field(default_factory=utcnow)
    correlation_id: str | None = Field(default=None, max_length=128)
    # Claim check: the payload was too large for SQS and is stored in S3 under this key.
    payload_ref: str | None = Field(default=None, max_length=1024)
    # The caller who created the task (JWT `sub`): travels with the task, so that a worker
    # that records the task before the API does still records who may read it.
    owner: str | None = Field(default=None, max_length=256)
    # Sent by a recurring schedule (template.yaml), without a task id: the firing it comes from,
    # whose task id is derived from it (offload.scheduling).
    schedule: ScheduleFiring | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_firing_has_its_own_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schedule") and "task_id" not in data:
            firing = ScheduleFiring.model_validate(data["schedule"])
            data = {
                **data,
                "task_id": firing_task_id(firing),
                "enqueued_at": data.get("enqueued_at", firing.scheduled_time),
            }
        return data


class Transition(BaseModel):
    """One entry of a task's history: the state it moved to, when, on which attempt, and why."""

    state: TaskState
    at: datetime
    attempt: int = 0
    error: str | None = Field(default=None, max_length=MAX_HISTORY_ERROR)


class TaskRecord(BaseModel):
    """A task's status as stored in the tasks table and shown by GET /tasks/{task_id}."""

    task_id: UUID
    # None only for a task not recorded yet (see unrecorded): its id does not tell its kind.
    kind: str | None
    state: TaskState
    attempts: int = 0
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    result: Any = None
    # The subject (JWT `sub`) of the caller who created the task; None: anyone may read it.
    owner: str | None = None
    # While `running`: when the worker that claimed the task can no longer be running.
    lease_expires_at: datetime | None = None
    # When a scheduled task is due; the one-time schedule that will queue it, if any.
    run_at: datetime | None = None
    schedule_name: str | None = None
    # Every move of the task, oldest first (bounded: see TasksTable).
    history: list[Transition] = Field(default_factory=list)

    def as_of(self, now: datetime, max_receive_count: int) -> "TaskRecord":
        """The task as it stands at `now`: a claim on the queue's last receive whose worker
        stopped (killed, out of memory, timed out) before recording an outcome is `dead`, since
        its message goes to the DLQ; nothing else would ever write that. A scheduled task past
        its run_at is `queued`: nothing writes that either, until a worker claims it."""
        if (
            self.state is TaskState.RUNNING
            and self.attempts >= max_receive_count
            and self.lease_expires_at is not None
            and self.lease_expires_at < now
        ):
            reason = (
                f"the worker stopped (crashed, ran out of memory or timed out) during the last "
                f"attempt ({self.attempts} of {max_receive_count}); the message goes to the "
                "dead-letter queue"
                + (f"; the attempt before failed: {self.error}" if self.error else "")
            )
            return self.model_copy(update={"state": TaskState.DEAD, "error": reason})
        if self.state is TaskState.SCHEDULED and self.run_at is not None and self.run_at <= now:
            # Due: its message is on its queue (or its schedule sends it within the minute).
            return self.model_copy(update={"state": TaskState.QUEUED})
        return self

    def matches(self, state: TaskState | None, kind: str | None) -> bool:
        """Whether this task is in `state` and of `kind` (None: any)."""
        return (state is None or self.state is state) and (kind is None or self.kind == kind)

    def visible_to(self, subject: str | None) -> bool:
        """Whether `subject` may read (or cancel) this task: its owner. A record that names no
        owner (an upload that its worker recorded first, from an S3 event) is the caller's whose
        id says so (offload.task_ids); a task with neither (an id made elsewhere) is anyone's."""
        if self.owner is not None:
            return self.owner == subject
        if issued_at(self.task_id) is not None:
            return issued_to(self.task_id, subject)
        return True


def unrecorded(
    task_id: UUID, subject: str | None, now: datetime, retention_seconds: int
) -> TaskRecord | None:
    """A task with no record yet, as its id tells it to `subject`: `queued` since its issue if
    the id was issued to `subject` less than the queues' message retention ago (its message may
    still be waiting for a worker); otherwise None (no such task, as far as `subject` may know).
    """
    issued = issued_at(task_id)
    if issued is None or not issued_to(task_id, subject):
        return None
    if not now - timedelta(seconds=retention_seconds) <= issued <= now + timedelta(minutes=5):
        return None
    return TaskRecord(
        task_id=task_id,
        kind=None,
        state=TaskState.QUEUED,
        created_at=issued,
        updated_at=issued,
        owner=subject,
        history=[Transition(state=TaskState.QUEUED, at=issued)],
    )
