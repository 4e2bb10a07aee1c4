"""Tasks that run later, and tasks that EventBridge Scheduler fires.

Running a task later (`add_task_later(when, func, ...)`, `TaskCall(run_at=...)`):

- up to 15 minutes ahead (SQS's most), the message waits in its queue (DelaySeconds);
- beyond that, up to a year ahead (EventBridge Scheduler's most), a one-time schedule sends the
  message to the queue at `run_at` and deletes itself (offload.aws.scheduler);
- a time in the past, or now, runs now.

Either way the task is recorded `scheduled`, with its `run_at`, until a worker claims it.

A recurring schedule (template.yaml) sends a task message without a task id: its `schedule`
names the firing with the scheduler's context attributes, `<aws.scheduler.schedule-arn>` and
`<aws.scheduler.scheduled-time>`, which stay the same when EventBridge Scheduler retries a
delivery. The task id is derived from them (`firing_task_id`): each firing is a task of its own,
and a firing delivered twice is one task, which runs once.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from offload.errors import TaskError
from offload.task_ids import new_task_id

# SQS delays a message by at most 15 minutes.
MAX_SQS_DELAY_SECONDS = 900
# EventBridge Scheduler's one-time schedules run at most a year ahead.
MAX_AHEAD = timedelta(days=365)

When = timedelta | datetime


class TooFarAheadError(TaskError, ValueError):
    """A run time more than a year ahead: EventBridge Scheduler would refuse it."""


class ScheduleFiring(BaseModel):
    """One firing of a recurring schedule, as EventBridge Scheduler fills it in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arn: str = Field(min_length=1, max_length=1600)
    scheduled_time: AwareDatetime


def firing_task_id(firing: ScheduleFiring) -> UUID:
    """The task id of one firing: the same for every delivery of that firing (a seeded id, with
    no owner: anyone may read the task, as any task a schedule runs)."""
    seed = f"schedule\n{firing.arn}\n{firing.scheduled_time.isoformat()}"
    return new_task_id(None, seed=seed.encode())


def run_at_of(when: When, now: datetime) -> datetime:
    """When a task given `when` (a delay, or an aware time) runs: a time in the past, or a
    delay of zero or less, means `now`. ValueError for a naive time, TooFarAheadError past a
    year.
    """
    if isinstance(when, timedelta):
        run_at = now + when
    else:
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"give an aware datetime (with a time zone), not {when!r}")
        run_at = when
    run_at = max(run_at, now)
    if run_at - now > MAX_AHEAD:
        raise TooFarAheadError(
            f"{run_at.isoformat()} is more than {MAX_AHEAD.days} days ahead: "
            "EventBridge Scheduler runs tasks at most a year later"
        )
    return run_at


@dataclass(frozen=True)
class Plan:
    """How a task reaches its queue at `run_at`: a delayed message, or a one-time schedule."""

    run_at: datetime
    delay_seconds: int  # SQS DelaySeconds (0: at once); unused when `scheduled`
    scheduled: bool  # a one-time EventBridge schedule sends it


def plan(run_at: datetime, now: datetime) -> Plan:
    seconds = (run_at - now).total_seconds()
    if seconds <= MAX_SQS_DELAY_SECONDS:
        return Plan(run_at, max(0, math.ceil(seconds)), scheduled=False)
    return Plan(run_at, 0, scheduled=True)
