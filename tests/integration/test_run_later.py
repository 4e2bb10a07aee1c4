"""Running a task later, through the API in moto: a delayed SQS message up to 15 minutes, a
one-time EventBridge Scheduler schedule beyond (moto's Scheduler: created, never fired)."""

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.main import app
from offload.aws.scheduler import at_expression, schedule_name
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.models import TaskMessage
from tests.support import AwsStack, installed
from workers.tasks import handler as tasks_handler


@pytest.fixture
def client(aws: AwsStack) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def run_worker_once(aws: AwsStack) -> int:
    """One TaskWorker invocation over what is visible on the task queue now."""
    messages = aws.receive_all(aws.task_queue, visibility=30)
    if messages:
        tasks_handler(
            sqs_event(messages, installed().sqs.queue_arn(aws.task_queue)),  # type: ignore[arg-type]
            LambdaContext(function_name="TaskWorker", timeout_seconds=30),
        )
    return len(messages)


def test_a_task_delayed_by_seconds_runs_after_its_delay_and_not_before(
    aws: AwsStack, client: TestClient
) -> None:
    # Given a notification to send 3 seconds from now
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    response = client.post(
        "/send-notification/alice@example.com", params={"send_at": rfc3339(send_at)}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "scheduled"
    task_id = accepted["task_id"]
    assert client.get(f"/tasks/{task_id}").json()["state"] == "scheduled"

    # When a worker polls before the delay is over, then after it
    before = run_worker_once(aws)
    state_before = client.get(f"/tasks/{task_id}").json()["state"]
    time.sleep(max(0.0, (send_at - datetime.now(UTC)).total_seconds()) + 0.5)
    after = run_worker_once(aws)

    # Then the message was not there before, and the task ran after
    assert (before, state_before) == (0, "scheduled")
    assert after == 1
    status = client.get(f"/tasks/{task_id}").json()
    assert status["state"] == "succeeded"
    assert datetime.fromisoformat(status["run_at"]) >= send_at - timedelta(seconds=1)


def test_a_task_two_hours_ahead_is_a_one_time_schedule_of_its_message(
    aws: AwsStack, client: TestClient
) -> None:
    send_at = datetime.now(UTC) + timedelta(hours=2)
    body = {"to": "bob@example.org", "subject": "Later", "text": "Hi", "send_at": rfc3339(send_at)}

    response = client.post("/emails", json=body)

    assert response.status_code == 202, response.text
    task_id = UUID(response.json()["task_id"])
    assert response.json()["state"] == "scheduled"
    # Nothing on the queue: the schedule will send it
    assert aws.receive_all(aws.email_queue) == []
    schedule = aws.schedule(schedule_name(task_id))
    assert schedule is not None
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["ScheduleExpression"] == at_expression(send_at)
    target = schedule["Target"]
    assert target["Arn"] == installed().sqs.queue_arn(aws.email_queue)
    assert target["RoleArn"] == aws.environment["OFFLOAD_SCHEDULER_ROLE_ARN"]
    assert target["DeadLetterConfig"]["Arn"] == aws.environment["OFFLOAD_SCHEDULER_DLQ_ARN"]
    message = TaskMessage.model_validate_json(target["Input"])
    assert (message.task_id, message.kind) == (task_id, "send_email")
    assert message.payload == {"to": "bob@example.org", "subject": "Later", "text": "Hi"}
    status = client.get(f"/tasks/{task_id}").json()
    assert status["state"] == "scheduled"
    assert datetime.fromisoformat(status["run_at"]) == send_at


def test_a_time_in_the_past_means_now(aws: AwsStack, client: TestClient) -> None:
    send_at = datetime.now(UTC) - timedelta(days=3)

    response = client.post(
        "/send-notification/alice@example.com", params={"send_at": rfc3339(send_at)}
    )

    assert response.status_code == 202
    assert response.json()["state"] == "queued"
    assert len(aws.receive_all(aws.task_queue)) == 1


@pytest.mark.parametrize(
    ("path", "where"),
    [("/emails", "body"), ("/send-notification/alice@example.com", "query")],
)
@pytest.mark.parametrize(
    "send_at", [rfc3339(datetime.now(UTC) + timedelta(days=366)), "2026-12-24T18:00:00", "soon"]
)
def test_more_than_a_year_ahead_or_not_a_time_is_a_422_naming_send_at(
    aws: AwsStack, client: TestClient, path: str, where: str, send_at: str
) -> None:
    if where == "body":
        body = {"to": "bob@example.org", "subject": "Later", "text": "Hi", "send_at": send_at}
        response = client.post(path, json=body)
    else:
        response = client.post(path, params={"send_at": send_at})

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [[where, "send_at"]]
    assert aws.receive_all(aws.task_queue) == aws.receive_all(aws.email_queue) == []
    assert json.dumps(response.json())  # a plain JSON error
