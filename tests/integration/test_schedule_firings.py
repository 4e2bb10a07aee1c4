"""A recurring schedule's firings reach the TaskWorker: each is a task of its own, and a firing
that EventBridge Scheduler delivers twice runs once."""

from typing import Any

import boto3

from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.models import TaskMessage
from tests.support import REGION, AwsStack, JsonLogs, fired, installed
from workers.tasks import handler as tasks_handler


def heartbeat(aws: AwsStack) -> dict[str, Any]:
    """The template's heartbeat schedule, as the stack created it in moto."""
    schedule = aws.schedule("HeartbeatSchedule")
    assert schedule is not None, "the dev stack has the heartbeat"
    return schedule


def deliver(aws: AwsStack, body: str) -> None:
    """What EventBridge Scheduler's SQS target does: SendMessage of the Input, as it is."""
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=aws.task_queue, MessageBody=body)


def run_worker(aws: AwsStack) -> None:
    messages = aws.receive_all(aws.task_queue, visibility=30)
    result = tasks_handler(
        sqs_event(messages, installed().sqs.queue_arn(aws.task_queue)),  # type: ignore[arg-type]
        LambdaContext(function_name="TaskWorker", timeout_seconds=30),
    )
    assert result == {"batchItemFailures": []}
    installed().sqs.delete_batch(aws.task_queue, messages)  # type: ignore[arg-type]


def test_a_firing_delivered_twice_runs_once(aws: AwsStack, json_logs: JsonLogs) -> None:
    schedule = heartbeat(aws)
    firing = fired(schedule, "2026-12-01T08:00:00Z")
    task_id = TaskMessage.model_validate_json(firing).task_id

    # When the scheduler delivers one firing, and again (a retry after a lost answer)
    deliver(aws, firing)
    run_worker(aws)
    deliver(aws, firing)
    run_worker(aws)

    # Then the task ran once, under the id of that firing
    assert len(json_logs.find("heartbeat")) == 1
    record = aws.task(task_id)
    assert record is not None
    assert (record["kind"], record["state"], record["attempts"]) == ("write_log", "succeeded", "1")


def test_each_firing_is_a_task_of_its_own(aws: AwsStack, json_logs: JsonLogs) -> None:
    schedule = heartbeat(aws)
    times = ["2026-12-01T08:00:00Z", "2026-12-01T08:01:00Z", "2026-12-01T08:02:00Z"]

    for scheduled_time in times:
        deliver(aws, fired(schedule, scheduled_time))
    run_worker(aws)

    assert len(json_logs.find("heartbeat")) == 3
    task_ids = {TaskMessage.model_validate_json(fired(schedule, t)).task_id for t in times}
    assert all(aws.task(t)["state"] == "succeeded" for t in task_ids)  # type: ignore[index]
