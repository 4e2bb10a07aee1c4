"""GET /tasks, DELETE /tasks/{task_id} and POST /tasks/{task_id}/retry through the Lambda
handler, as API Gateway invokes it once the JWT authorizer accepted the caller."""

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import pytest

from api.main import handler
from offload.aws.scheduler import schedule_name
from offload.enqueue import TaskCall, enqueue
from offload.errors import PermanentTaskError
from offload.local.lambda_runtime import sqs_event
from offload.models import TaskState
from offload.registry import definition_of, task
from offload.task_ids import new_task_id
from tests.integration.test_task_ownership import ALICE, BOB, as_caller, at
from tests.support import AwsStack, EventLoader, JsonLogs, installed, owned_task
from workers.tasks import handler as tasks_handler

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


# ------------------------------------------------------------------ cancel


def test_a_task_two_hours_ahead_is_cancelled_and_its_schedule_is_gone(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given Alice's email two hours ahead: a scheduled task with a one-time schedule
    send_at = datetime.now(UTC) + timedelta(hours=2)
    body = {
        "to": "bob@example.org",
        "subject": "Later",
        "text": "Hi",
        "send_at": f"{send_at:%Y-%m-%dT%H:%M:%SZ}",
    }
    request = as_caller(at(event("api-emails.json"), "POST", "/emails", body), ALICE, WRITE)
    created = handler(request, lambda_context)
    assert created["statusCode"] == 202, created["body"]
    task_id = UUID(json.loads(created["body"])["task_id"])
    assert aws.schedule(schedule_name(task_id)) is not None
    assert call(event, lambda_context, "GET", f"/tasks/{task_id}", ALICE)[1]["state"] == "scheduled"

    # When Bob tries to cancel it, then it does not exist for him
    assert call(event, lambda_context, "DELETE", f"/tasks/{task_id}", BOB)[0] == 404

    # When Alice cancels it
    code, cancelled = call(event, lambda_context, "DELETE", f"/tasks/{task_id}", ALICE)

    # Then it is cancelled, its schedule is gone, and cancelling again is a 409
    assert code == 200, cancelled
    assert cancelled["state"] == "cancelled"
    assert [h["state"] for h in cancelled["history"]] == ["scheduled", "cancelled"]
    assert aws.schedule(schedule_name(task_id)) is None
    code, again = call(event, lambda_context, "DELETE", f"/tasks/{task_id}", ALICE)
    assert (code, again["state"]) == (409, "cancelled")


def test_a_cancelled_delayed_task_is_dropped_by_its_worker(
    aws: AwsStack, event: EventLoader, lambda_context: Any, json_logs: JsonLogs
) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    request = at(event("api-send-notification.json"), "POST", "/send-notification/a@example.com")
    request["rawQueryString"] = urlencode({"send_at": f"{send_at:%Y-%m-%dT%H:%M:%S.%fZ}"})
    request = as_caller(request, ALICE, WRITE)
    task_id = UUID(json.loads(handler(request, lambda_context)["body"])["task_id"])

    assert call(event, lambda_context, "DELETE", f"/tasks/{task_id}", ALICE)[0] == 200
    time.sleep(max(0.0, (send_at - datetime.now(UTC)).total_seconds()) + 0.5)
    messages = aws.receive_all(aws.task_queue, visibility=30)
    assert len(messages) == 1
    tasks_handler(sqs_event(messages, installed().sqs.queue_arn(aws.task_queue)), lambda_context)  # type: ignore[arg-type]

    assert json_logs.find("Notification sent to a@example.com") == []
    assert call(event, lambda_context, "GET", f"/tasks/{task_id}", ALICE)[1]["state"] == "cancelled"


@pytest.mark.parametrize(
    "state", [TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD]
)
def test_cancel_answers_409_with_the_state_of_a_task_that_started(
    aws: AwsStack, event: EventLoader, lambda_context: Any, state: TaskState
) -> None:
    task_id = recorded(ALICE, state)

    code, body = call(event, lambda_context, "DELETE", f"/tasks/{task_id}", ALICE)

    assert (code, body["state"]) == (409, state.value), body
    assert "cancelled" in body["detail"]


# ------------------------------------------------------------------ retry
_attempts: dict[str, int] = {}


@task(name="tests_dies_once")
def dies_once(key: str) -> str:
    """Fails for good on its first run, succeeds on the next (a fix deployed meanwhile)."""
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise PermanentTaskError("the recipient's mailbox does not exist")
    return "done"


def run_task_worker(aws: AwsStack, context: Any) -> None:
    messages = aws.receive_all(aws.task_queue, visibility=30)
    assert messages
    tasks_handler(sqs_event(messages, installed().sqs.queue_arn(aws.task_queue)), context)  # type: ignore[arg-type]
    installed().sqs.delete_batch(aws.task_queue, messages)  # type: ignore[arg-type]


def test_a_dead_task_is_retried_under_its_id_and_keeps_why_it_died(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given Alice's task that died (a permanent error: its message went to the DLQ)
    task_id = new_task_id(ALICE)
    enqueue(
        installed(),
        [TaskCall(definition_of(dies_once), {"key": str(task_id)}, task_id)],
        owner=ALICE,
    )
    run_task_worker(aws, lambda_context)
    assert call(event, lambda_context, "GET", f"/tasks/{task_id}", ALICE)[1]["state"] == "dead"

    # When Bob retries it: not his. When Alice does: queued again, under the same id
    assert call(event, lambda_context, "POST", f"/tasks/{task_id}/retry", BOB)[0] == 404
    code, retried = call(event, lambda_context, "POST", f"/tasks/{task_id}/retry", ALICE)

    # Then it is queued with its history (why it died), and a worker runs it to success
    assert code == 202, retried
    assert retried["state"] == "queued"
    died = [h for h in retried["history"] if h["state"] == "dead"]
    assert died and "mailbox does not exist" in died[-1]["error"]
    run_task_worker(aws, lambda_context)
    final = call(event, lambda_context, "GET", f"/tasks/{task_id}", ALICE)[1]
    assert (final["state"], final["result"]) == ("succeeded", "done")
    assert [h["state"] for h in final["history"]][-3:] == ["queued", "running", "succeeded"]


@pytest.mark.parametrize(
    "state", [TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RETRYING]
)
def test_retry_answers_409_with_the_state_of_a_task_that_is_not_dead(
    aws: AwsStack, event: EventLoader, lambda_context: Any, state: TaskState
) -> None:
    task_id = recorded(ALICE, state)

    code, body = call(event, lambda_context, "POST", f"/tasks/{task_id}/retry", ALICE)

    assert (code, body["state"]) == (409, state.value), body
    assert aws.receive_all(aws.task_queue) == []


def test_retry_of_a_dead_task_whose_message_was_not_kept_is_409(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    task_id = recorded(ALICE, TaskState.DEAD)  # recorded without its message

    code, body = call(event, lambda_context, "POST", f"/tasks/{task_id}/retry", ALICE)

    assert (code, body["state"]) == (409, "dead")
    assert "redrive" in body["detail"]
