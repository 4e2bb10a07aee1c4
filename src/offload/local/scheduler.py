"""The local system's EventBridge Scheduler: moto keeps the schedules, this fires them.

A thread of the runner reads every schedule of every group from the embedded AWS twice a second
and fires each on time, as EventBridge Scheduler does with an SQS target: it sends the target's
Input to the queue, its context attributes filled in (`<aws.scheduler.schedule-arn>`,
`<aws.scheduler.scheduled-time>`, `<aws.scheduler.execution-id>`,
`<aws.scheduler.attempt-number>`), and deletes a one-time schedule after it fired if its
ActionAfterCompletion is DELETE. A send that fails goes to the schedule's dead-letter queue.

When a schedule fires, here as on AWS:
- `at(yyyy-mm-ddThh:mm:ss)`: once, at that time in the schedule's time zone;
- `rate(N minute|minutes|hour|hours|day|days)`: at its StartDate (its creation if none), then
  every N units; the first firing of a rate schedule is therefore when the local system starts;
- `cron(minutes hours day-of-month month day-of-week year)`: AWS's six fields, with `?`, `L`,
  `W` and `#` (the aws-croniter library), in the schedule's time zone.
A schedule stops after its EndDate and while its State is DISABLED. Flexible time windows are
not emulated: every firing is on time. Firings the local system missed while it was stopped are
not caught up.
"""

import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import boto3
from aws_croniter import AwsCroniter
from botocore.exceptions import BotoCoreError, ClientError

from offload.models import TaskMessage

_AT = re.compile(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)")
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\((.+)\)")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


class ExpressionError(ValueError):
    """A schedule expression that EventBridge Scheduler would refuse."""


@dataclass(frozen=True)
class Timing:
    """When one schedule fires."""

    expression: str
    zone: ZoneInfo
    start: datetime  # StartDate, or the schedule's creation
    end: datetime | None = None

    @property
    def one_time(self) -> bool:
        return self.expression.startswith("at(")

    def first(self) -> datetime | None:
        """The schedule's first firing."""
        at = _AT.fullmatch(self.expression)
        if at:
            return datetime.fromisoformat(at.group(1)).replace(tzinfo=self.zone).astimezone(UTC)
        if _RATE.fullmatch(self.expression):
            return self._until_end(self.start)
        return self.after(self.start, inclusive=True)

    def after(self, moment: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first firing of a recurring schedule after `moment` (or at it, if `inclusive`);
        None for a one-time one, or past the schedule's EndDate."""
        rate = _RATE.fullmatch(self.expression)
        if rate:
            period = timedelta(seconds=int(rate.group(1)) * _UNITS[rate.group(2).rstrip("s")])
            periods = max(0, (moment - self.start) // period + 1)
            return self._until_end(self.start + periods * period)
        cron = _CRON.fullmatch(self.expression)
        if cron:
            wall = moment.astimezone(self.zone).replace(tzinfo=UTC)  # the zone's wall clock
            (found,) = _croniter(cron.group(1)).get_next(wall, inclusive=inclusive)
            if found is None:
                return None
            return self._until_end(found.replace(tzinfo=self.zone).astimezone(UTC))
        return None

    def _until_end(self, moment: datetime) -> datetime | None:
        return None if self.end is not None and moment > self.end else moment


def _croniter(fields: str) -> AwsCroniter:
    try:
        return AwsCroniter(fields)
    except Exception as exc:  # the library raises its own errors, and ValueError
        raise ExpressionError(f"cron({fields}): {exc}") from exc


def timing(schedule: dict[str, Any]) -> Timing:
    """The Timing of a schedule as GetSchedule describes it; ExpressionError if it is not
    at(...), rate(...) or cron(...)."""
    expression = str(schedule["ScheduleExpression"]).strip()
    if not (_AT.fullmatch(expression) or _RATE.fullmatch(expression)):
        cron = _CRON.fullmatch(expression)
        if not cron:
            raise ExpressionError(f"{expression!r} is not at(...), rate(...) or cron(...)")
        _croniter(cron.group(1))
    rate = _RATE.fullmatch(expression)
    if rate and int(rate.group(1)) < 1:
        raise ExpressionError(f"{expression!r}: the rate must be at least 1")
    return Timing(
        expression,
        ZoneInfo(schedule.get("ScheduleExpressionTimezone") or "UTC"),
        _utc(schedule.get("StartDate") or schedule["CreationDate"]),
        _utc(schedule["EndDate"]) if schedule.get("EndDate") else None,
    )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def fill_in(text: str, schedule_arn: str, scheduled_time: datetime, attempt: int = 1) -> str:
    """The Input with EventBridge Scheduler's context attributes replaced."""
    return (
        text.replace("<aws.scheduler.schedule-arn>", schedule_arn)
        .replace(
            "<aws.scheduler.scheduled-time>", f"{scheduled_time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
        )
        .replace("<aws.scheduler.execution-id>", secrets.token_hex(8))
        .replace("<aws.scheduler.attempt-number>", str(attempt))
    )


@dataclass
class _Due:
    modified: datetime
    timing: Timing
    next: datetime | None


class LocalScheduler:
    """Fires the schedules of the embedded AWS at `endpoint`; `say` prints each firing."""

    def __init__(
        self,
        endpoint: str | None,
        say: Callable[[str], None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        session = boto3.session.Session()
        self.scheduler = session.client("scheduler", endpoint_url=endpoint)
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        self.say = say
        self.now = now
        self.due: dict[tuple[str, str], _Due] = {}

    def start(self, stopping: threading.Event, interval: float = 0.5) -> threading.Thread:
        def loop() -> None:
            while not stopping.wait(interval):
                try:
                    self.tick()
                except (BotoCoreError, ClientError) as error:  # moto is stopping
                    if not stopping.is_set():
                        self.say(f"scheduler: {error}")

        thread = threading.Thread(target=loop, name="scheduler", daemon=True)
        thread.start()
        return thread

    def schedules(self) -> list[dict[str, Any]]:
        found = []
        for group in self.scheduler.list_schedule_groups()["ScheduleGroups"]:
            for summary in self.scheduler.list_schedules(GroupName=group["Name"])["Schedules"]:
                found.append(
                    self.scheduler.get_schedule(Name=summary["Name"], GroupName=group["Name"])
                )
        return found  # type: ignore[return-value]

    def tick(self) -> int:
        """Fire every schedule that is due; returns how many fired."""
        now = self.now()
        fired = 0
        seen = set()
        for schedule in self.schedules():
            key = (schedule["GroupName"], schedule["Name"])
            seen.add(key)
            due = self.due.get(key)
            if due is None or due.modified != schedule["LastModificationDate"]:
                try:
                    when = timing(schedule)
                except ExpressionError as error:
                    self.say(f"schedule {key[0]}/{key[1]}: {error}; it never fires")
                    when = Timing("never", ZoneInfo("UTC"), now)
                due = self.due[key] = _Due(schedule["LastModificationDate"], when, when.first())
            if due.next is None or due.next > now or schedule.get("State") == "DISABLED":
                continue
            self.fire(schedule, due.next)
            fired += 1
            if due.timing.one_time:
                due.next = None
                if schedule.get("ActionAfterCompletion") == "DELETE":
                    self.scheduler.delete_schedule(Name=key[1], GroupName=key[0])
            else:  # the next firing after now: missed ones are not caught up
                due.next = due.timing.after(max(due.next, now))
        for key in set(self.due) - seen:
            del self.due[key]
        return fired

    def fire(self, schedule: dict[str, Any], scheduled_time: datetime) -> None:
        """Send the schedule's Input to its target queue (to its DLQ if that fails)."""
        target = schedule["Target"]
        body = fill_in(target.get("Input", ""), schedule["Arn"], scheduled_time)
        name = f"{schedule['GroupName']}/{schedule['Name']}"
        queue_arn = str(target["Arn"])
        try:
            self.sqs.send_message(QueueUrl=self._queue_url(queue_arn), MessageBody=body)
        except (BotoCoreError, ClientError) as error:
            self.say(f"schedule {name} could not send to {queue_arn}: {error}")
            dlq = (target.get("DeadLetterConfig") or {}).get("Arn")
            if dlq:
                event = {"schedule": schedule["Arn"], "error": str(error), "input": body}
                self.sqs.send_message(QueueUrl=self._queue_url(dlq), MessageBody=json.dumps(event))
            return
        self.say(
            f"schedule {name} fired ({scheduled_time.astimezone(UTC):%H:%M:%S}) → "
            f"{queue_arn.rsplit(':', 1)[-1]}{_task(body)}"
        )

    def _queue_url(self, arn: str) -> str:
        *_, account, name = arn.split(":")
        url = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        return str(url["QueueUrl"])


def _task(body: str) -> str:
    try:
        message = TaskMessage.model_validate_json(body)
    except ValueError:
        return ""
    return f"  task {message.task_id} {message.kind}"
