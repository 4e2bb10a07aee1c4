"""The API's Idempotency-Key header and correlation id, over HTTP against moto."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import app, handler
from tests.support import AwsStack, EventLoader, compose, installed, task_message


@pytest.fixture
def client(aws: AwsStack) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


EMAIL = {"to": "bob@example.com", "subject": "Hi", "text": "Hello"}


def test_same_key_and_body_gives_the_same_task_and_queues_it_once(
    client: TestClient, aws: AwsStack
) -> None:
    headers = {"Idempotency-Key": "order-42"}

    first = client.post("/emails", json=EMAIL, headers=headers)
    retry = client.post("/emails", json=EMAIL, headers=headers)

    assert (first.status_code, retry.status_code) == (202, 202)
    assert first.json()["task_id"] == retry.json()["task_id"]
    (queued,) = aws.receive_all(aws.email_queue)
    assert str(task_message(queued).task_id) == first.json()["task_id"]


def test_same_key_with_a_different_body_is_a_conflict(client: TestClient, aws: AwsStack) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert client.post("/emails", json=EMAIL, headers=headers).status_code == 202

    reused = client.post("/emails", json={**EMAIL, "text": "Other"}, headers=headers)

    assert reused.status_code == 409
    assert "different request" in reused.json()["detail"]
    assert len(aws.receive_all(aws.email_queue)) == 1


def test_the_key_covers_the_path_too(client: TestClient, aws: AwsStack) -> None:
    headers = {"Idempotency-Key": "k-1"}
    assert client.post("/send-notification/a@example.com", headers=headers).status_code == 202
    assert client.post("/send-notification/b@example.com", headers=headers).status_code == 409


def test_without_a_key_every_request_is_a_new_task(client: TestClient) -> None:
    first = client.post("/emails", json=EMAIL)
    second = client.post("/emails", json=EMAIL)
    assert first.json()["task_id"] != second.json()["task_id"]


def test_the_response_echoes_the_correlation_id_put_on_the_message(
    client: TestClient, aws: AwsStack
) -> None:
    response = client.post("/emails", json=EMAIL, headers={"X-Correlation-Id": "corr-7"})

    assert response.headers["x-correlation-id"] == "corr-7"
    (queued,) = aws.receive_all(aws.email_queue)
    assert task_message(queued).correlation_id == "corr-7"
    assert queued["MessageAttributes"]["correlation_id"]["StringValue"] == "corr-7"


def test_a_retry_after_a_503_with_the_same_key_queues_the_task_for_real(
    client: TestClient, aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first attempt that SQS refused: the client is told to retry (503)
    headers = {"Idempotency-Key": "order-44"}
    monkeypatch.setenv("OFFLOAD_EMAIL_QUEUE_URL", aws.email_queue + "-missing")
    compose(monkeypatch)
    assert client.post("/emails", json=EMAIL, headers=headers).status_code == 503

    # When the client retries with the same key, and SQS takes it this time
    monkeypatch.setenv("OFFLOAD_EMAIL_QUEUE_URL", aws.email_queue)
    compose(monkeypatch)
    retry = client.post("/emails", json=EMAIL, headers=headers)

    # Then the task (same id, derived from the key) is queued again, not left failed
    assert retry.status_code == 202
    task_id = retry.json()["task_id"]
    (queued,) = aws.receive_all(aws.email_queue)
    assert str(task_message(queued).task_id) == task_id
    status = aws.task(task_id)
    assert status is not None
    assert status["state"] == "queued"
    assert "error" not in status


def test_under_lambda_a_key_in_progress_frees_itself_at_the_function_timeout(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given an API Gateway event with an Idempotency-Key, and a look at the idempotency table
    # while the request is enqueueing (as a function that died at that moment would leave it)
    request = event("api-emails.json")
    request["headers"]["idempotency-key"] = "order-45"
    seen: list[dict[str, Any]] = []

    def peek(**_: Any) -> None:
        seen.extend(aws.table_items(aws.idempotency_table))

    sqs_client = installed().clients.sqs
    sqs_client.meta.events.register("before-call.sqs.SendMessageBatch", peek)
    try:
        # When Lambda invokes the API handler
        response = handler(request, lambda_context)
    finally:
        sqs_client.meta.events.unregister("before-call.sqs.SendMessageBatch", peek)

    # Then the in-progress record expires with the invocation, not after the key's 24 h
    assert response["statusCode"] == 202, response["body"]
    (in_progress,) = [r for r in seen if r["status"]["S"] == "INPROGRESS"]
    expires_ms = int(in_progress["in_progress_expiration"]["N"])
    assert 0 < expires_ms / 1000 - time.time() <= lambda_context.timeout_seconds
