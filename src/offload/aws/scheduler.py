"""One-time EventBridge Scheduler schedules: a task message sent to its queue at a given time.

Each is named after its task (`task-<task id>`), in the stack's group (OFFLOAD_SCHEDULE_GROUP),
sends with the scheduler's role (OFFLOAD_SCHEDULER_ROLE_ARN), retries a failed delivery and then
dead-letters it (OFFLOAD_SCHEDULER_DLQ_ARN), and deletes itself once it has fired.
"""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_scheduler.type_defs import TargetTypeDef

# A failed delivery is retried for up to an hour, then goes to the scheduler's DLQ.
RETRY_ATTEMPTS = 10
RETRY_MAX_EVENT_AGE_SECONDS = 3600


class SchedulerNotConfiguredError(RuntimeError):
    """OFFLOAD_SCHEDULE_GROUP or OFFLOAD_SCHEDULER_ROLE_ARN is not set."""


def schedule_name(task_id: UUID) -> str:
    return f"task-{task_id}"


def at_expression(run_at: datetime) -> str:
    """`at(yyyy-mm-ddThh:mm:ss)` in UTC, rounded up to the second (never before run_at)."""
    utc = run_at.astimezone(UTC)
    if utc.microsecond:
        utc = utc.replace(microsecond=0) + timedelta(seconds=1)
    return f"at({utc:%Y-%m-%dT%H:%M:%S})"


class Scheduler:
    """One-time schedules in `group` through `client`."""

    def __init__(
        self, client: "EventBridgeSchedulerClient", group: str, role_arn: str, dlq_arn: str
    ) -> None:
        self.client = client
        self.group = group
        self.role_arn = role_arn
        self.dlq_arn = dlq_arn

    def create_one_time(self, task_id: UUID, run_at: datetime, queue_arn: str, body: str) -> None:
        """Send `body` to the queue at `run_at`, once. A schedule of that task that exists
        already (a retried request) is left as it is."""
        if not (self.group and self.role_arn):
            raise SchedulerNotConfiguredError(
                "tasks more than 15 minutes ahead need EventBridge Scheduler: set "
                "OFFLOAD_SCHEDULE_GROUP and OFFLOAD_SCHEDULER_ROLE_ARN"
            )
        target: TargetTypeDef = {
            "Arn": queue_arn,
            "RoleArn": self.role_arn,
            "Input": body,
            "RetryPolicy": {
                "MaximumRetryAttempts": RETRY_ATTEMPTS,
                "MaximumEventAgeInSeconds": RETRY_MAX_EVENT_AGE_SECONDS,
            },
        }
        if self.dlq_arn:
            target["DeadLetterConfig"] = {"Arn": self.dlq_arn}
        try:
            self.client.create_schedule(
                Name=schedule_name(task_id),
                GroupName=self.group,
                ScheduleExpression=at_expression(run_at),
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target=target,
                ClientToken=str(task_id),
            )
        except self.client.exceptions.ConflictException:
            return

    def delete(self, task_id: UUID) -> bool:
        """Delete the task's one-time schedule; False if there is none (it has fired)."""
        if not self.group:
            return False
        try:
            self.client.delete_schedule(Name=schedule_name(task_id), GroupName=self.group)
        except self.client.exceptions.ResourceNotFoundException:
            return False
        return True
