"""Security behaviour through the real entry points: TestClient (HTTP), the email worker's
Lambda handler (SQS event in), against the template's resources in moto."""

import base64
import copy
import json
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.main import app, handler
from api.security import PUBLIC_PATHS
from example_app.settings import get_settings
from offload.fastapi import get_offload
from offload.models import TaskState
from offload.settings import Settings
from tests.support import AwsStack, EventLoader, compose, installed, offload_command, record_task

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
    get_settings.cache_clear()  # the example app's reading (request validation, body limit)
    compose(monkeypatch)


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


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_token_is_a_settings_error_not_an_open_api(
    aws: AwsStack,
    monkeypatch: pytest.MonkeyPatch,
    event: EventLoader,
    lambda_context: Any,
    empty: str,
) -> None:
    # Given OFFLOAD_API_TOKEN set but empty (a typo, or `export OFFLOAD_API_TOKEN=$UNSET_VAR`)
    monkeypatch.setenv("OFFLOAD_API_TOKEN", empty)
    # ... and the app composing its own Offload from that environment, as it does when deployed
    monkeypatch.delitem(app.dependency_overrides, get_offload)
    monkeypatch.delattr(app.state, "offload", raising=False)

    # Then the settings refuse it, naming the variable
    with pytest.raises(ValidationError, match="OFFLOAD_API_TOKEN"):
        Settings()
    # And the app refuses to start (uvicorn runs the lifespan before it listens)
    with pytest.raises(ValidationError, match="OFFLOAD_API_TOKEN"), TestClient(app):
        pass
    # And under Mangum (no lifespan) no call gets through without a token: nothing is queued
    response = handler(event("api-send-notification.json"), lambda_context)
    assert response["statusCode"] == 500, response
    assert aws.receive_all(aws.task_queue) == []
    assert aws.table_items(aws.tasks_table) == []


@pytest.mark.parametrize("argv", [["--api-token", ""], ["--api-token", "  "], []])
def test_make_run_refuses_an_empty_token(argv: list[str]) -> None:
    # Given `make run ARGS="--api-token ''"`, or OFFLOAD_API_TOKEN= in the environment
    # When the local system starts, then it stops at once with the reason (nothing started)
    result = offload_command("run", *argv, env={"OFFLOAD_API_TOKEN": ""})

    assert result.exit_code == 2
    assert "OFFLOAD_API_TOKEN" in result.stderr


def test_no_token_configured_means_open(aws: AwsStack, client: TestClient) -> None:
    # On AWS the JWT authorizer has already checked the caller; the app adds nothing.
    assert installed().settings.api_token is None

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


# Line and paragraph separators, NEL, VT, FF, NUL, TAB, ESC, DEL: categories Cc, Zl and Zp.
NOT_SINGLE_LINE = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x00", "\t", "\x1b", "\x7f"]


@pytest.mark.parametrize("char", NOT_SINGLE_LINE, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("where", ["inside", "at the end"])
def test_a_subject_with_a_control_or_separator_character_is_refused(
    aws: AwsStack, client: TestClient, char: str, where: str
) -> None:
    subject = f"Hello{char}Bcc: victim@example.net" if where == "inside" else f"Hello{char}"
    email = {"to": "bob@example.org", "subject": subject, "text": "hello"}

    response = client.post("/emails", json=email)

    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [error["loc"] for error in errors] == [["body", "subject"]]
    assert f"U+{ord(char):04X}" in errors[0]["msg"]
    assert aws.receive_all(aws.email_queue) == []


@pytest.mark.parametrize(
    "char", ["\u2028", "\x85", "\x0b", "\x00"], ids=lambda c: f"U+{ord(c):04X}"
)
@pytest.mark.parametrize(
    ("route", "field"),
    [("/email/{}", "to_email"), ("/send-notification/{}", "email")],
)
def test_an_address_in_the_path_with_a_control_character_is_refused(
    aws: AwsStack, client: TestClient, char: str, route: str, field: str
) -> None:
    # Email validation would quietly strip these at the ends; they are refused instead
    for address in (f"bob@example.org{char}", f"{char}bob@example.org"):
        response = client.post(route.format(quote(address)))

        assert response.status_code == 422, (address, response.text)
        assert [e["loc"] for e in response.json()["detail"]] == [["path", field]]
    assert aws.receive_all(aws.email_queue) == aws.receive_all(aws.task_queue) == []


def test_a_subject_with_a_separator_that_bypassed_the_api_is_never_sent(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given a send_email message put on the queue by something other than the API
    sqs_event = event("sqs-email-worker.json")
    sqs_event["Records"] = sqs_event["Records"][:1]
    body = json.loads(sqs_event["Records"][0]["body"])
    body["payload"]["subject"] = "Hello\u2028Bcc: victim@example.net"
    sqs_event["Records"][0]["body"] = json.dumps(body)
    from workers.email import handler as email_handler

    # When the email worker gets it
    response = email_handler(sqs_event, lambda_context)

    # Then nothing is sent, the message is not retried, and the task says why
    assert response == {"batchItemFailures": []}
    assert aws.sent_emails() == []
    task = aws.task(body["task_id"])
    assert task is not None and task["state"] in {"failed", "dead"}, task
    assert "U+2028" in task["error"], task


def test_an_upload_filename_with_separators_becomes_a_safe_key(
    aws: AwsStack, client: TestClient
) -> None:
    # A filename is only a name: it is sanitised (not refused), and the key has none of them
    offer = {
        "filename": "a\u2028b\u2029c\x85d\x0be\x00f.csv",
        "content_type": "text/csv",
        "size": 3,
    }

    response = client.post("/uploads", json=offer)

    assert response.status_code == 201, response.text
    key = response.json()["key"]
    assert not [c for c in key if unicodedata.category(c) in {"Cc", "Zl", "Zp"}], key
    assert key.endswith("/a_b_cdef.csv"), key


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


# ------------------------------------------------------------------ JWT without a subject

BODIES: dict[str, dict[str, Any]] = {
    "/emails": {"to": "bob@example.org", "subject": "Hi", "text": "hello"},
    "/uploads": {"filename": "orders.csv", "content_type": "text/csv", "size": 10},
}


def with_claims(request: dict[str, Any], claims: dict[str, str]) -> dict[str, Any]:
    """The event as API Gateway sends it once its JWT authorizer accepted a token."""
    request = copy.deepcopy(request)
    request["requestContext"]["authorizer"] = {
        "jwt": {"claims": claims, "scopes": ["offload/tasks.read", "offload/tasks.write"]}
    }
    return request


def route_event(event: EventLoader, method: str, path: str) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event for `method path` on the dev stage, body included."""
    request = event("api-emails.json" if method == "POST" else "api-get-task.json")
    request["rawPath"] = request["requestContext"]["http"]["path"] = f"/dev{path}"
    request["requestContext"]["http"]["method"] = method
    request["pathParameters"] = {"proxy": path.lstrip("/")}
    request["body"] = json.dumps(BODIES.get(path, {})) if method == "POST" else None
    if method == "POST":
        request["headers"]["content-length"] = str(len(request["body"]))
    return request


CLAIMS_WITHOUT_SUB = {
    "client_id": "4k2q9x7m1r5t8w3z6b0c",
    "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Xq1bR7vC3",
    "scope": "offload/tasks.read offload/tasks.write",
    "token_use": "access",
}


@pytest.mark.parametrize(
    "claims",
    [CLAIMS_WITHOUT_SUB, {**CLAIMS_WITHOUT_SUB, "sub": ""}, {**CLAIMS_WITHOUT_SUB, "sub": "  "}],
    ids=["no-sub", "empty-sub", "blank-sub"],
)
def test_a_jwt_without_a_subject_is_refused_on_every_route_but_health(
    aws: AwsStack, event: EventLoader, lambda_context: Any, claims: dict[str, str]
) -> None:
    # Given a task without an owner (readable by any identified caller), and the app's routes
    record_task(UUID(SAMPLE_ID), "process_upload", TaskState.RUNNING)
    routes = [(m, p) for m, p in app_routes() if p not in PUBLIC_PATHS]
    assert {p for _, p in routes} >= {"/emails", "/uploads", f"/tasks/{SAMPLE_ID}"}, routes

    for method, path in routes:
        # When a caller whose valid JWT has no `sub` calls it
        response = handler(with_claims(route_event(event, method, path), claims), lambda_context)

        # Then it is refused with 401: that caller cannot be told apart from any other
        assert response["statusCode"] == 401, (method, path, response["body"])
        assert "sub" in json.loads(response["body"])["detail"], response["body"]

    # And nothing was queued or recorded
    for queue in (aws.task_queue, aws.email_queue):
        assert aws.receive_all(queue) == []
    assert [item["task_id"]["S"] for item in aws.table_items(aws.tasks_table)] == [SAMPLE_ID]

    # While the same calls with a subject go through (the refusal is the missing `sub`); cancel
    # and retry then answer for the running task itself: 409, with its state
    identified = {**claims, "sub": "5f1e6a2c-0b7d-4e3f-9a18-c2d4e6f8a0b1"}
    for method, path in routes:
        response = handler(
            with_claims(route_event(event, method, path), identified), lambda_context
        )
        if response["statusCode"] == 409:
            assert json.loads(response["body"])["state"] == "running", (method, path)
            continue
        assert response["statusCode"] < 300, (method, path, response["body"])


def test_two_callers_without_a_subject_do_not_share_an_idempotency_key(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given two different clients whose tokens carry no `sub`, using the same Idempotency-Key
    answers = []
    for client_id in ("client-a", "client-b"):
        request = with_claims(
            route_event(event, "POST", "/emails"), {**CLAIMS_WITHOUT_SUB, "client_id": client_id}
        )
        request["headers"]["idempotency-key"] = "order-42"
        answers.append(handler(request, lambda_context))

    # Then neither gets a task id (which would be the same one, readable by both)
    assert [answer["statusCode"] for answer in answers] == [401, 401]
    assert aws.receive_all(aws.email_queue) == []


# ------------------------------------------------------------------ presigned upload form


def upload_policy(fields: dict[str, str]) -> dict[str, Any]:
    """The POST policy S3 enforces, decoded from the form fields the API hands out."""
    policy: dict[str, Any] = json.loads(base64.b64decode(fields["policy"]))
    return policy


@pytest.mark.parametrize("size", [1, 1234, 1_073_741_824])
def test_the_upload_form_accepts_exactly_the_declared_size_at_exactly_its_key(
    aws: AwsStack, client: TestClient, size: int
) -> None:
    # Given an upload declared as `size` bytes
    offer = {"filename": "orders.csv", "content_type": "text/csv", "size": size}

    # When the API hands out the presigned POST
    response = client.post("/uploads", json=offer)

    # Then S3 will take exactly that many bytes, at exactly that key, of that type
    assert response.status_code == 201, response.text
    created = response.json()
    conditions = upload_policy(created["fields"])["conditions"]
    ranges = [c for c in conditions if isinstance(c, list) and c[0] == "content-length-range"]
    assert ranges == [["content-length-range", size, size]]
    assert created["size"] == size
    assert {"key": created["key"]} in conditions
    assert created["fields"]["key"] == created["key"]
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    assert {"Content-Type": "text/csv"} in conditions
