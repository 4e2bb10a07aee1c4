"""Names in messages, end to end: a user's own task beside the example app's, messages naming
what the allow-list does not cover, and calls that only run in-process (a closure, a database
session from a dependency).

The API is a real FastAPI app under TestClient; the worker is the TaskWorker's handler given the
SQS event Lambda would build from the queue's messages (moto).
"""

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from offload.fastapi import BackgroundTasks
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.models import TaskMessage
from offload.registry import NotSendableError
from offload.worker import sqs_handler
from tests.integration import own_tasks
from tests.support import AwsStack, JsonLogs, installed, task_message

NEVER = "tests.unit.never_imported"


def run_worker(aws: AwsStack) -> list[dict[str, Any]]:
    """Hand every message on the task queue to the TaskWorker's handler, as Lambda would."""
    messages = aws.receive_all(aws.task_queue, visibility=30)
    assert messages, "nothing to deliver"
    event = sqs_event(messages, installed().sqs.queue_arn(aws.task_queue))  # type: ignore[arg-type]
    result = sqs_handler("tasks")(event, LambdaContext("offload-dev-TaskWorker", 30))
    assert result == {"batchItemFailures": []}
    return messages


@pytest.fixture
def effects() -> Iterator[list[tuple[str, object]]]:
    own_tasks.effects.clear()
    yield own_tasks.effects
    own_tasks.effects.clear()


def test_a_users_own_write_log_runs_beside_the_example_apps(
    aws: AwsStack, effects: list[tuple[str, object]], json_logs: JsonLogs
) -> None:
    # Given a user's own @task write_log, while the worker also loads the example app's
    app = FastAPI()

    @app.post("/log")
    async def log(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(own_tasks.write_log, "mine")

    # When the API queues it and the worker runs it
    assert TestClient(app).post("/log").status_code == 200
    [message] = [task_message(m) for m in run_worker(aws)]

    # Then the user's function ran, under its own name, and the example app's did not
    assert message.kind == "tests.integration.own_tasks:write_log"
    assert effects == [("write_log", "mine")]
    assert not [r for r in json_logs.records if r.get("event") == "write_log"]
    assert aws.task(message.task_id)["state"] == "succeeded"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (f"{NEVER}:boom", "not in OFFLOAD_TASK_MODULES"),
        ("os:system", "not in OFFLOAD_TASK_MODULES"),
        ("__import__('os').system('id')", "no task named"),
        # In an allowed module: a function imported from elsewhere, a private one, a task
        # under another name.
        ("example_app.emails:get_settings", "example_app.emails defines no function"),
        ("example_app.emails:_allowed", "private"),
        ("example_app.notifications:write_log", "is the task named 'write_log'"),
    ],
)
def test_a_message_naming_anything_else_is_dead_lettered_and_nothing_is_imported(
    aws: AwsStack, json_logs: JsonLogs, kind: str, reason: str
) -> None:
    # Given a message, forged or stale, naming something the deployment does not allow
    message = TaskMessage(kind=kind, payload={})
    assert installed().sqs.send_messages(aws.task_queue, [message]) == {}

    # When the TaskWorker receives it
    run_worker(aws)

    # Then it is in the DLQ with the reason, the task is dead, the reason is logged
    [dead] = aws.receive_all(aws.task_dlq)
    assert task_message(dead).task_id == message.task_id
    assert reason in dead["MessageAttributes"]["error"]["StringValue"]
    record = aws.task(message.task_id)
    assert record is not None and record["state"] == "dead" and reason in record["error"]
    [logged] = json_logs.find("task failed permanently; sent to the DLQ without retry")
    assert logged["level"] == "ERROR" and reason in logged["reason"]
    # And the module it names was never imported
    assert NEVER not in sys.modules


class Database:
    def session(self) -> own_tasks.Session:
        return own_tasks.Session()


def get_session() -> own_tasks.Session:
    return Database().session()


def build_app() -> FastAPI:
    """An app that hands its tasks what cannot travel: a closure and a database session."""
    app = FastAPI()

    @app.post("/rows/{row}")
    async def add_row(
        row: int,
        background_tasks: BackgroundTasks,
        session: Annotated[own_tasks.Session, Depends(get_session)],
    ) -> dict[str, str]:
        def audit(note: str) -> None:
            own_tasks.effects.append(("audit", f"{note} {row}"))

        background_tasks.add_task(own_tasks.save, session, row)
        background_tasks.add_task(audit, "added")
        background_tasks.add_task(lambda: own_tasks.effects.append(("lambda", row)))
        return {"status": "ok"}

    return app


def test_without_a_queue_closures_and_sessions_run_in_process(
    env: None, effects: list[tuple[str, object]], json_logs: JsonLogs
) -> None:
    response = TestClient(build_app()).post("/rows/7")

    assert response.status_code == 200
    assert effects == [("saved", 7), ("audit", "added 7"), ("lambda", 7)]
    warnings = [r["message"] for r in json_logs.records if r["level"] == "WARNING"]
    assert any(
        "tests.integration.own_tasks:save runs in-process only" in w and "argument 'session'" in w
        for w in warnings
    ), warnings
    assert any("audit runs in-process only" in w for w in warnings), warnings


def test_with_a_queue_they_are_refused_at_add_task_and_nothing_is_queued(
    aws: AwsStack, effects: list[tuple[str, object]]
) -> None:
    with (
        TestClient(build_app()) as client,
        pytest.raises(NotSendableError, match="argument 'session'") as caught,
    ):
        client.post("/rows/7")

    assert isinstance(caught.value, TypeError)
    assert "tests.integration.own_tasks:save" in str(caught.value)
    assert effects == []
    assert aws.receive_all(aws.task_queue) == []
    assert aws.table_items(aws.tasks_table) == []
