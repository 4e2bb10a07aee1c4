"""Security behaviour through the real entry points: TestClient (HTTP), the email worker's
Lambda handler (SQS event in), against the template's resources in moto."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import app
from api.security import PUBLIC_PATHS
from offload.settings import get_settings
from tests.support import AwsStack, EventLoader

TOKEN = "s3cret-token-for-tests"
SAMPLE_ID = "3e8f1a2b-4c5d-4e6f-9a0b-1c2d3e4f5a6b"


class SamplePathValues(dict[str, str]):
    """Path parameters for any route: addresses where one is expected, else an id."""

    def __missing__(self, name: str) -> str:
        return "alice@example.com" if "email" in name else SAMPLE_ID


@pytest.fixture
def client(aws: AwsStack) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def configure(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"OFFLOAD_{name.upper()}", value)
    get_settings.cache_clear()


def app_routes() -> list[tuple[str, str]]:
    """(method, concrete path) for every operation the app's OpenAPI schema declares."""
    return [
        (method.upper(), path.format_map(SamplePathValues()))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]


# ------------------------------------------------------------------ bearer token


def test_every_route_but_health_needs_the_token_when_one_is_set(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a configured API token
    configure(monkeypatch, api_token=TOKEN)
    routes = app_routes()
    assert len(routes) >= 5, routes

    for method, path in routes:
        # When a route is called without a token, or with a wrong one
        missing = client.request(method, path)
        wrong = client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}x"})

        # Then only the public routes answer; the others say 401 and ask for a bearer token
        if path in PUBLIC_PATHS:
            assert missing.status_code == 200, (method, path)
            continue
        for response in (missing, wrong):
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"detail": "missing or invalid bearer token"}


def test_the_right_token_is_accepted(
    aws: AwsStack, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, api_token=TOKEN)

    response = client.post("/email/bob@example.org", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 202, response.text
    assert len(aws.receive_all(aws.email_queue)) == 1


def test_no_token_configured_means_open(aws: AwsStack, client: TestClient) -> None:
    # On AWS the JWT authorizer has already checked the caller; the app adds nothing.
    assert get_settings().api_token is None

    assert client.post("/send-notification/alice@example.com").status_code == 202


def test_the_schema_declares_bearer_auth_and_health_is_public(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {} in schema["paths"]["/health"]["get"]["security"]  # anonymous allowed
    assert {} not in schema["paths"]["/emails"]["post"]["security"]
    assert "401" in schema["paths"]["/emails"]["post"]["responses"]


# ------------------------------------------------------------------ body size limit


def test_a_declared_body_over_the_limit_is_refused_with_413(
    aws: AwsStack, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, max_body_bytes="1000")
    email = {"to": "bob@example.org", "subject": "Hi", "text": "x" * 2000}

    response = client.post("/emails", json=email)

    assert response.status_code == 413
    assert response.json() == {"detail": "the request body is larger than 1000 bytes"}
    assert aws.receive_all(aws.email_queue) == []


def test_a_chunked_body_over_the_limit_is_refused_with_413(
    aws: AwsStack, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a body streamed without a Content-Length (Transfer-Encoding: chunked)
    configure(monkeypatch, max_body_bytes="1000")
    email = json.dumps({"to": "bob@example.org", "subject": "Hi", "text": "x" * 2000}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(email), 256):
            yield email[start : start + 256]

    # When it is posted
    response = client.post(
        "/emails", content=chunks(), headers={"Content-Type": "application/json"}
    )

    # Then the read that crosses the limit ends the request with 413, and nothing is queued
    assert response.status_code == 413
    assert aws.receive_all(aws.email_queue) == []


def test_a_chunked_body_under_the_limit_is_accepted(
    aws: AwsStack, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, max_body_bytes="1000")
    email = json.dumps({"to": "bob@example.org", "subject": "Hi", "text": "hello"}).encode()

    response = client.post(
        "/emails",
        content=iter([email[:10], email[10:]]),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 202, response.text


# ------------------------------------------------------------------ header injection


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hello\r\nBcc: victim@example.net"),
        ("subject", "Hello\nBcc: victim@example.net"),
        ("to", "bob@example.org\r\nBcc: victim@example.net"),
    ],
)
def test_cr_lf_in_header_fields_is_refused(
    aws: AwsStack, client: TestClient, field: str, value: str
) -> None:
    email = {"to": "bob@example.org", "subject": "Hi", "text": "hello", field: value}

    response = client.post("/emails", json=email)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert aws.receive_all(aws.email_queue) == []


# ------------------------------------------------------------------ recipient allow-list


def test_a_recipient_off_the_allow_list_is_refused_with_422_naming_the_field(
    aws: AwsStack, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stage that may only mail example.org and one address at example.com
    configure(monkeypatch, allowed_recipients="@example.org, carol@example.com")

    body = client.post("/emails", json={"to": "eve@elsewhere.net", "subject": "Hi", "text": "x"})
    path = client.post("/email/dave@example.com")

    assert body.status_code == 422
    assert [e["loc"] for e in body.json()["detail"]] == [["body", "to"]]
    assert "OFFLOAD_ALLOWED_RECIPIENTS" in body.json()["detail"][0]["msg"]
    assert path.status_code == 422
    assert [e["loc"] for e in path.json()["detail"]] == [["path", "to_email"]]
    assert aws.receive_all(aws.email_queue) == []

    # And the listed domain and address go through (case does not matter)
    assert client.post("/email/Bob@Example.ORG").status_code == 202
    assert client.post("/email/carol@example.com").status_code == 202
    assert len(aws.receive_all(aws.email_queue)) == 2


def test_the_email_worker_refuses_a_recipient_off_the_allow_list(
    aws: AwsStack, event: EventLoader, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a queued email to bob@example.org, and then an allow-list that leaves him out
    configure(monkeypatch, allowed_recipients="example.com")
    sqs_event = event("sqs-email-worker.json")
    sqs_event["Records"] = sqs_event["Records"][:1]
    task_id = json.loads(sqs_event["Records"][0]["body"])["task_id"]
    from workers.email import handler

    # When the worker gets it
    response = handler(sqs_event, lambda_context)

    # Then no email is sent, the message goes to the DLQ at once, and the task is dead
    assert response == {"batchItemFailures": []}
    assert aws.sent_emails() == []
    assert len(aws.receive_all(aws.email_dlq)) == 1
    task = aws.task(task_id)
    assert task is not None
    assert task["state"] == "dead"
    assert "not allowed" in task["error"]
