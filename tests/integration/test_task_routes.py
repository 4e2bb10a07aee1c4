"""GET /tasks, DELETE /tasks/{task_id} and POST /tasks/{task_id}/retry through the Lambda
handler, as API Gateway invokes it once the JWT authorizer accepted the caller."""

import json
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from api.main import handler
from offload.models import TaskState
from tests.integration.test_task_ownership import ALICE, BOB, as_caller, at
from tests.support import AwsStack, EventLoader, installed, owned_task

READ, WRITE = "offload/tasks.read", "offload/tasks.write"


def call(
    event: EventLoader,
    context: Any,
    method: str,
    path: str,
    sub: str | None,
    query: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    request = at(event("api-get-task.json"), method, path)
    request["rawQueryString"] = urlencode(query or {})
    request["queryStringParameters"] = {k: str(v) for k, v in (query or {}).items()} or None
    if sub is not None:
        request = as_caller(request, sub, READ if method == "GET" else WRITE)
    response = handler(request, context)
    return response["statusCode"], json.loads(response["body"])


def recorded(
    owner: str | None, state: TaskState = TaskState.RUNNING, kind: str = "write_log"
) -> UUID:
    return owned_task(installed(), owner, state, kind)


def test_a_caller_pages_through_its_own_tasks(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    alices = [recorded(ALICE) for _ in range(5)]
    bobs = [recorded(BOB)]

    pages, cursor = [], None
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        code, body = call(event, lambda_context, "GET", "/tasks", ALICE, query)
        assert code == 200, body
        pages.append([UUID(t["task_id"]) for t in body["tasks"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [t for p in pages for t in p] == list(reversed(alices))
    code, body = call(event, lambda_context, "GET", "/tasks", BOB)
    assert [UUID(t["task_id"]) for t in body["tasks"]] == bobs
    assert "owner" not in body["tasks"][0]


def test_filters_and_a_bad_cursor(aws: AwsStack, event: EventLoader, lambda_context: Any) -> None:
    done = recorded(ALICE, TaskState.SUCCEEDED)
    recorded(ALICE)

    code, body = call(event, lambda_context, "GET", "/tasks", ALICE, {"state": "succeeded"})
    assert code == 200 and [UUID(t["task_id"]) for t in body["tasks"]] == [done]

    code, body = call(event, lambda_context, "GET", "/tasks", ALICE, {"cursor": "bm9wZQ"})
    assert code == 422 and [e["loc"] for e in body["detail"]] == [["query", "cursor"]]
    code, body = call(event, lambda_context, "GET", "/tasks", ALICE, {"state": "sleeping"})
    assert code == 422 and body["detail"][0]["loc"] == ["query", "state"]


def test_another_callers_cursor_shows_only_your_own_tasks(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    for _ in range(3):
        recorded(ALICE)
    mine = recorded(BOB)
    _, alices_page = call(event, lambda_context, "GET", "/tasks", ALICE, {"limit": 1})

    code, body = call(
        event, lambda_context, "GET", "/tasks", BOB, {"cursor": alices_page["next_cursor"]}
    )

    assert code == 200
    assert {UUID(t["task_id"]) for t in body["tasks"]} <= {mine}
