"""The local system's scheduler (offload.local.scheduler) fires moto's schedules on time: the
template's heartbeat, one-time schedules of tasks run later, AWS's cron() forms."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo

import boto3
import pytest

from example_app.notifications import write_log
from offload.aws.scheduler import schedule_name
from offload.enqueue import TaskCall, enqueue
from offload.local.scheduler import ExpressionError, LocalScheduler, Timing, timing
from offload.models import TaskMessage
from offload.registry import definition_of
from offload.wiring import Offload
from tests.support import REGION, AwsStack

UTC_ZONE = ZoneInfo("UTC")


class Clock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def bodies(aws: AwsStack, queue: str) -> list[TaskMessage]:
    return [TaskMessage.model_validate_json(m["Body"]) for m in aws.receive_all(queue, 30)]


def test_the_heartbeat_fires_at_start_then_every_minute(aws: AwsStack) -> None:
    heartbeat = aws.schedule("HeartbeatSchedule")
    assert heartbeat is not None
    clock = Clock(heartbeat["CreationDate"].astimezone(UTC))
    said: list[str] = []
    scheduler = LocalScheduler(None, said.append, now=clock)

    first = scheduler.tick()
    clock.now += timedelta(seconds=59)
    early = scheduler.tick()
    clock.now += timedelta(seconds=2)
    second = scheduler.tick()

    assert (first, early, second) == (1, 0, 1)
    messages = bodies(aws, aws.task_queue)
    assert [m.kind for m in messages] == ["write_log", "write_log"]
    assert len({m.task_id for m in messages}) == 2
    firings = [m.schedule for m in messages]
    assert all(f is not None and f.arn.endswith("/HeartbeatSchedule") for f in firings)
    times = sorted(f.scheduled_time for f in firings if f is not None)
    assert times[1] - times[0] == timedelta(minutes=1)
    assert [line for line in said if "HeartbeatSchedule fired" in line] and len(said) == 2


def test_a_one_time_schedule_fires_once_on_time_and_is_deleted(
    aws: AwsStack, offload: Offload
) -> None:
    # Given a task two hours ahead (a one-time schedule), and a clock at the heartbeat's start
    clock = Clock()
    scheduler = LocalScheduler(None, lambda _: None, now=clock)
    scheduler.tick()  # the heartbeat's first firing
    aws.receive_all(aws.task_queue, 30)
    run_at = clock.now + timedelta(hours=2)
    call = TaskCall(definition_of(write_log), {"message": "later"}, uuid4(), run_at=run_at)
    enqueue(offload, [call])
    assert aws.schedule(schedule_name(call.task_id)) is not None

    # When the clock passes just before run_at, then run_at
    clock.now = run_at - timedelta(seconds=1)
    scheduler.tick()
    before = [m for m in bodies(aws, aws.task_queue) if m.task_id == call.task_id]
    clock.now = run_at + timedelta(seconds=1)
    scheduler.tick()
    after = [m for m in bodies(aws, aws.task_queue) if m.task_id == call.task_id]

    # Then it was sent once, at its time, and the schedule is gone
    assert before == []
    assert [(m.kind, m.payload) for m in after] == [("write_log", {"message": "later"})]
    assert aws.schedule(schedule_name(call.task_id)) is None


def test_a_schedule_that_cannot_send_dead_letters_the_firing(aws: AwsStack) -> None:
    scheduler_client = boto3.client("scheduler", region_name=REGION)
    dlq = aws.environment["OFFLOAD_SCHEDULER_DLQ_ARN"]
    scheduler_client.create_schedule(
        Name="nowhere",
        GroupName=aws.schedule_group,
        ScheduleExpression="rate(5 minutes)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={
            "Arn": "arn:aws:sqs:us-east-1:123456789012:no-such-queue",
            "RoleArn": aws.environment["OFFLOAD_SCHEDULER_ROLE_ARN"],
            "Input": "{}",
            "DeadLetterConfig": {"Arn": dlq},
        },
    )
    try:
        said: list[str] = []
        LocalScheduler(None, said.append).tick()
        dlq_url = boto3.client("sqs", region_name=REGION).get_queue_url(
            QueueName=dlq.rsplit(":", 1)[-1]
        )["QueueUrl"]
        dead = aws.receive_all(dlq_url, 30)
        assert len(dead) == 1 and "no-such-queue" in " ".join(said)
    finally:
        scheduler_client.delete_schedule(Name="nowhere", GroupName=aws.schedule_group)


START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # a Tuesday


@pytest.mark.parametrize(
    ("expression", "zone", "firings"),
    [
        ("rate(5 minutes)", "UTC", ["2026-12-01T08:00", "2026-12-01T08:05", "2026-12-01T08:10"]),
        ("rate(1 day)", "UTC", ["2026-12-01T08:00", "2026-12-02T08:00", "2026-12-03T08:00"]),
        (
            "cron(0 10 ? * MON-FRI *)",
            "UTC",
            ["2026-12-01T10:00", "2026-12-02T10:00", "2026-12-03T10:00"],
        ),
        (
            "cron(0 12 L * ? *)",
            "Europe/Paris",
            ["2026-12-31T11:00", "2027-01-31T11:00", "2027-02-28T11:00"],
        ),
        (
            "cron(15 10 ? * 6#3 *)",
            "UTC",
            ["2026-12-18T10:15", "2027-01-15T10:15", "2027-02-19T10:15"],
        ),
        (
            "cron(0 9 15W * ? *)",
            "UTC",
            ["2026-12-15T09:00", "2027-01-15T09:00", "2027-02-15T09:00"],
        ),
        (
            "cron(0/30 * * * ? 2026)",
            "UTC",
            ["2026-12-01T08:00", "2026-12-01T08:30", "2026-12-01T09:00"],
        ),
    ],
)
def test_recurring_expressions(expression: str, zone: str, firings: list[str]) -> None:
    when = Timing(expression, ZoneInfo(zone), START)
    found = [when.first()]
    while len(found) < 3:
        assert found[-1] is not None
        found.append(when.after(found[-1]))
    assert [f"{f:%Y-%m-%dT%H:%M}" for f in found if f is not None] == firings


def test_one_time_and_ending_schedules() -> None:
    at = Timing("at(2026-12-24T18:00:00)", ZoneInfo("Europe/Paris"), START)
    ending = Timing("rate(1 hour)", UTC_ZONE, START, end=START + timedelta(minutes=90))

    assert at.first() == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    assert at.after(START) is None
    assert ending.after(START) == START + timedelta(hours=1)
    assert ending.after(START + timedelta(hours=1)) is None


@pytest.mark.parametrize(
    "expression",
    ["rate(0 minutes)", "rate(5 weeks)", "cron(* * * * *)", "every day", "at(tomorrow)"],
)
def test_an_expression_aws_would_refuse_is_refused(expression: str) -> None:
    with pytest.raises(ExpressionError):
        timing(
            {
                "ScheduleExpression": expression,
                "CreationDate": START,
                "ScheduleExpressionTimezone": "UTC",
            }
        )
