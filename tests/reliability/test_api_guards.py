"""The API's guards, through the Lambda entry point (`api.main.handler`, Mangum), fed API
Gateway HTTP API (v2) events.

- case 12: API Gateway's JWT authorizer puts a token's claims in
  requestContext.authorizer.jwt.claims. A token without `sub` (for example a client-credentials
  token of some identity providers) names nobody: such callers would share one identity, get
  each other's task ids for the same Idempotency-Key and read each other's tasks. Every route
  that creates or reads tasks must answer 401 to it. And an empty OFFLOAD_API_TOKEN must not
  turn the local bearer check off silently;
- case 16: a subject with a character of Unicode category Cc, Zl or Zp (not only CR and LF)
  is refused with a 422 that names the field, and nothing is queued.
"""

from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.main import app, handler
from api.security import PUBLIC_PATHS
from example_app.uploads.models import UPLOAD_KIND
from tests.reliability.harness import api_event, queue_depth
from tests.reliability.support import print_table
from tests.support import AwsStack, installed

# A client-credentials access token's claims: a client, scopes, no subject.
CLAIMS_WITHOUT_SUB = {
    "auth_time": "1764022190",
    "client_id": "4k2q9x7m1r5t8w3z6b0c",
    "exp": "1764025790",
    "iat": "1764022190",
    "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Xq1bR7vC3",
    "jti": "0e5d7c9b-3a1f-4e2d-8c6b-5a4f3e2d1c0b",
    "scope": "offload/tasks.write offload/tasks.read",
    "token_use": "access",
    "version": "2",
}
TASK = UUID("6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b")
UPLOAD = UUID("7b2e1d3f-4c5e-4f6a-9b0c-1d2e3f4a5b6c")
# Every route that creates or reads tasks: (method, path template, path, JSON body).
ROUTES: list[tuple[str, str, str, Any]] = [
    ("POST", "/emails", "/emails", {"to": "carol@example.com", "subject": "Hi", "text": "x"}),
    ("POST", "/email/{to_email}", "/email/carol@example.com", None),
    ("POST", "/send-notification/{email}", "/send-notification/carol@example.com", None),
    ("POST", "/uploads", "/uploads", {"filename": "a.csv", "content_type": "text/csv", "size": 9}),
    ("GET", "/tasks/{task_id}", f"/tasks/{TASK}", None),
    ("GET", "/uploads/{upload_id}", f"/uploads/{UPLOAD}", None),
]


def test_a_jwt_without_sub_gets_401_on_every_task_route(aws: AwsStack, lambda_context: Any) -> None:
    # Given a task and an upload that exist (with no owner: readable by any identified caller)
    installed().tasks.create(TASK, "send_email")
    installed().tasks.create(UPLOAD, UPLOAD_KIND)

    # When a caller whose JWT has no `sub` calls each route that creates or reads tasks
    answers = {}
    for method, template, path, body in ROUTES:
        request = api_event(method, path, body, CLAIMS_WITHOUT_SUB, "same-key-for-everyone")
        response = handler(request, lambda_context)
        answers[f"{method} {template}"] = response["statusCode"]
    health = handler(api_event("GET", "/health", claims=CLAIMS_WITHOUT_SUB), lambda_context)
    print_table(
        "A JWT without sub",
        [*answers.items(), ("GET /health (public)", health["statusCode"])],
    )

    # Then each answers 401, nothing was created or queued, and /health still answers
    assert answers == dict.fromkeys(answers, 401), answers
    created = {item["task_id"]["S"] for item in aws.table_items(aws.tasks_table)}
    assert created == {str(TASK), str(UPLOAD)}, (
        f"tasks created: {created - {str(TASK), str(UPLOAD)}}"
    )
    assert not queue_depth(aws.email_queue) and not queue_depth(aws.task_queue)
    assert health["statusCode"] == 200


def test_the_route_list_names_every_route_that_needs_a_caller() -> None:
    routes = {
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, APIRoute) and route.path not in PUBLIC_PATHS
        for method in route.methods
    }
    listed = {f"{method} {template}" for method, template, _, _ in ROUTES}
    assert routes <= listed, f"add these routes to ROUTES: {sorted(routes - listed)}"


def test_an_empty_api_token_does_not_turn_the_bearer_check_off(
    aws: AwsStack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given OFFLOAD_API_TOKEN set, but empty, and a task that exists
    task_id = uuid4()
    installed().tasks.create(task_id, "send_email")
    monkeypatch.setenv("OFFLOAD_API_TOKEN", "")

    # When the app starts and a caller without a token reads the task
    refused: Exception | None = None
    statuses: list[int] = []
    try:
        with TestClient(app) as client:
            statuses = [
                client.get(f"/tasks/{task_id}").status_code,
                client.get(f"/tasks/{task_id}", headers={"Authorization": "Bearer "}).status_code,
            ]
    except Exception as exc:  # refusing to start is an answer
        refused = exc
    output = caplog.text + "".join(capsys.readouterr())
    said_so = "OFFLOAD_API_TOKEN" in output
    print_table(
        "An empty OFFLOAD_API_TOKEN",
        [
            ("refused to start", " ".join(str(refused).split())[-90:] if refused else "no"),
            ("GET /tasks/{id} without a token / with an empty one", statuses or "-"),
            ("said clearly (a log line naming OFFLOAD_API_TOKEN)", said_so),
        ],
    )

    # Then the app refused to start, or the calls were refused, or it said it ignores the value
    assert refused is not None or statuses == [401, 401] or said_so, statuses


# Characters that end or break a header line somewhere: Unicode categories Cc, Zl and Zp.
BREAKERS = {
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
    "NEXT LINE": "\u0085",
    "VT": "\x0b",
    "FF": "\x0c",
    "NUL": "\x00",
}


def test_a_subject_with_a_line_breaking_character_is_refused(
    aws: AwsStack, lambda_context: Any
) -> None:
    answers = {}
    for name, char in BREAKERS.items():
        body = {"to": "carol@example.com", "subject": f"Hi{char}Bcc: x@example.com", "text": "x"}
        response = handler(api_event("POST", "/emails", body), lambda_context)
        detail = response["body"] if response["statusCode"] == 422 else ""
        answers[name] = (response["statusCode"], "subject" in detail)
    print_table("Subjects with line-breaking characters", list(answers.items()))
    assert answers == dict.fromkeys(BREAKERS, (422, True)), answers
    assert not queue_depth(aws.email_queue)
