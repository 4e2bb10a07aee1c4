"""The HTTP API against moto: through the Lambda handler (Mangum, events/ in) and TestClient."""

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.main import app, handler
from tests.support import AwsStack, EventLoader, compose, installed, task_message

NOTIFY_TASK = "write_log"


@pytest.fixture
def client(aws: AwsStack) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = handler(event, context)
    return response


# ------------------------------------------------------------------ Lambda handler, events/ in


def test_health_event(aws: AwsStack, event: EventLoader, lambda_context: Any) -> None:
    response = invoke(event("api-health.json"), lambda_context)

    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ok", "stage": "dev"}


def test_default_stage_is_served_at_the_root(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # An HTTP API on its $default stage sends the path without a stage prefix.
    request = event("api-health.json")
    request["rawPath"] = request["requestContext"]["http"]["path"] = "/health"
    request["requestContext"]["stage"] = "$default"

    response = invoke(request, lambda_context)

    assert response["statusCode"] == 200


def test_a_path_outside_the_stage_is_not_found(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    request = event("api-health.json")
    request["rawPath"] = request["requestContext"]["http"]["path"] = "/development/health"

    response = invoke(request, lambda_context)

    assert response["statusCode"] == 404


@pytest.mark.parametrize(
    ("name", "queue", "kind", "payload"),
    [
        (
            "api-send-notification.json",
            "task_queue",
            "write_log",
            {"message": "Notification sent to alice@example.com"},
        ),
        (
            "api-email.json",
            "email_queue",
            "send_email",
            {
                "to": "bob@example.org",
                "subject": "Hello from Offload",
                "text": "This email was sent by a durable background task.",
            },
        ),
        (
            "api-emails.json",
            "email_queue",
            "send_email",
            {
                "to": "carol@example.com",
                "subject": "Your report is ready",
                "text": "Hi Carol,\n\nThe weekly report is attached to your dashboard.",
                "html": "<p>Hi Carol,</p><p>The weekly report is on your dashboard.</p>",
            },
        ),
    ],
)
def test_post_event_queues_the_task(
    aws: AwsStack,
    event: EventLoader,
    lambda_context: Any,
    name: str,
    queue: str,
    kind: str,
    payload: dict[str, Any],
) -> None:
    # Given an API Gateway HTTP API (payload 2.0) event from events/
    request = event(name)

    # When Lambda invokes the API handler with it
    response = invoke(request, lambda_context)

    # Then it answers 202 with the task id and a status URL on the same stage
    assert response["statusCode"] == 202, response["body"]
    accepted = json.loads(response["body"])
    task_id = UUID(accepted["task_id"])
    assert accepted["state"] == "queued"
    assert accepted["status_url"] == (
        f"https://{request['requestContext']['domainName']}/dev/tasks/{task_id}"
    )
    # And the message is on the right queue, with the payload and API Gateway's request id
    messages = aws.receive_all(getattr(aws, queue))
    assert len(messages) == 1
    message = task_message(messages[0])
    assert message.task_id == task_id
    assert message.kind == kind
    assert message.payload == payload
    assert message.correlation_id == request["requestContext"]["requestId"]
    assert messages[0]["MessageAttributes"]["task_id"]["StringValue"] == str(task_id)
    assert messages[0]["MessageAttributes"]["kind"]["StringValue"] == kind
    # And nothing is written to DynamoDB: the id answers for the task until a worker claims it
    assert aws.task(task_id) is None
    status_request = event("api-get-task.json")
    status_request["rawPath"] = status_request["rawPath"].rsplit("/", 1)[0] + f"/{task_id}"
    status_request["requestContext"]["http"]["path"] = status_request["rawPath"]
    status_request["pathParameters"]["proxy"] = (
        status_request["pathParameters"]["proxy"].rsplit("/", 1)[0] + f"/{task_id}"
    )
    status = invoke(status_request, lambda_context)
    assert status["statusCode"] == 200, status["body"]
    shown = json.loads(status["body"])
    assert (shown["state"], shown["kind"], shown["attempts"]) == ("queued", None, 0)


def test_invalid_email_event_is_422_and_enqueues_nothing(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    response = invoke(event("api-emails-invalid.json"), lambda_context)

    assert response["statusCode"] == 422
    errors = json.loads(response["body"])["detail"]
    assert [e["loc"] for e in errors] == [["body", "to"]]
    assert aws.receive_all(aws.email_queue) == []
    assert aws.table_items(aws.tasks_table) == []


def test_get_task_event(aws: AwsStack, event: EventLoader, lambda_context: Any) -> None:
    request = event("api-get-task.json")
    task_id = request["pathParameters"]["proxy"].rsplit("/", 1)[-1]

    # Unknown task → 404
    missing = invoke(request, lambda_context)
    assert missing["statusCode"] == 404

    # A recorded task → its status

    installed().tasks.create(UUID(task_id), "write_log")
    found = invoke(event("api-get-task.json"), lambda_context)
    assert found["statusCode"] == 200
    body = json.loads(found["body"])
    assert body["task_id"] == task_id
    assert (body["state"], body["kind"], body["attempts"]) == ("queued", "write_log", 0)


# ------------------------------------------------------------------ TestClient


def test_post_emails_then_get_status(aws: AwsStack, client: TestClient) -> None:
    response = client.post(
        "/emails",
        json={"to": "dan@example.com", "subject": "Welcome", "html": "<b>Hi</b>"},
        headers={"x-correlation-id": "req-42"},
    )

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status_url"] == f"http://testserver/tasks/{accepted['task_id']}"
    [message] = [task_message(m) for m in aws.receive_all(aws.email_queue)]
    assert message.payload == {"to": "dan@example.com", "subject": "Welcome", "html": "<b>Hi</b>"}
    assert message.correlation_id == "req-42"

    # The task has no record until a worker claims it: its id answers for it (kind unknown)
    status = client.get(accepted["status_url"])
    assert status.status_code == 200
    assert status.json()["state"] == "queued"
    assert status.json()["kind"] is None


def test_send_notification_route(aws: AwsStack, client: TestClient) -> None:
    response = client.post("/send-notification/erin@example.com")

    assert response.status_code == 202
    [message] = [task_message(m) for m in aws.receive_all(aws.task_queue)]
    assert message.kind == NOTIFY_TASK
    assert message.payload == {"message": "Notification sent to erin@example.com"}
    assert str(message.task_id) == response.json()["task_id"]


def test_email_with_defaults_route(aws: AwsStack, client: TestClient) -> None:
    response = client.post("/email/frank@example.com")

    assert response.status_code == 202
    [message] = [task_message(m) for m in aws.receive_all(aws.email_queue)]
    assert message.payload["to"] == "frank@example.com"
    assert message.payload["subject"] and message.payload["text"]


@pytest.mark.parametrize(
    ("method", "url", "json_body", "field"),
    [
        ("post", "/send-notification/not-an-email", None, ["path", "email"]),
        ("post", "/email/nobody.example.com", None, ["path", "to_email"]),
        ("post", "/emails", {"to": "x@", "subject": "Hi", "text": "t"}, ["body", "to"]),
        ("post", "/emails", {"to": "g@example.com", "text": "t"}, ["body", "subject"]),
        ("post", "/emails", {"to": "g@example.com", "subject": "Hi"}, ["body"]),
        (
            "post",
            "/emails",
            {"to": "g@example.com", "subject": "Hi\r\nBcc: all@example.com", "text": "t"},
            ["body", "subject"],
        ),
        ("post", "/emails", {"to": "g@example.com", "subject": "x" * 201, "text": "t"}, None),
        ("post", "/emails", {"to": "g@example.com", "subject": "Hi", "text": "x" * 100_001}, None),
        ("post", "/emails", {"to": "g@example.com", "subject": "Hi", "text": "t", "cc": "a"}, None),
    ],
    ids=[
        "notify-bad-email",
        "email-bad-email",
        "emails-bad-to",
        "emails-missing-subject",
        "emails-missing-body",
        "emails-subject-crlf",
        "emails-subject-too-long",
        "emails-text-too-long",
        "emails-unknown-field",
    ],
)
def test_bad_input_is_422_naming_the_field_and_enqueues_nothing(
    aws: AwsStack,
    client: TestClient,
    method: str,
    url: str,
    json_body: dict[str, Any] | None,
    field: list[str] | None,
) -> None:
    response = getattr(client, method)(url, json=json_body)

    assert response.status_code == 422, response.text
    locations = [e["loc"] for e in response.json()["detail"]]
    if field is not None:
        assert field in locations, locations
    else:
        # Oversized and unexpected fields are named too.
        expected = {"subject", "text", "cc"} & set(json_body or {})
        assert any(loc[-1] in expected for loc in locations), locations
    assert aws.receive_all(aws.email_queue) == []
    assert aws.receive_all(aws.task_queue) == []
    assert aws.table_items(aws.tasks_table) == []


def test_get_unknown_task_is_404(aws: AwsStack, client: TestClient) -> None:
    response = client.get("/tasks/00000000-0000-4000-8000-000000000000")

    assert response.status_code == 404


def test_get_task_with_a_malformed_id_is_422(aws: AwsStack, client: TestClient) -> None:
    response = client.get("/tasks/not-a-uuid")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


def test_sqs_refusing_the_message_answers_503_and_marks_the_task(
    aws: AwsStack, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a queue URL that SQS does not know
    monkeypatch.setenv("OFFLOAD_TASK_QUEUE_URL", aws.task_queue + "-missing")

    compose(monkeypatch)

    response = client.post("/send-notification/gina@example.com")

    # Then the client is told to retry, and no task is left looking queued
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    [item] = aws.table_items(aws.tasks_table)
    assert item["state"]["S"] == "failed"
    assert "not enqueued" in item["error"]["S"]
