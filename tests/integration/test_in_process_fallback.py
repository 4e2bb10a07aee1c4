"""No queue configured: under plain uvicorn the tasks run in-process after the response, and the
logs say so; on Lambda the request is refused."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offload import task
from offload.fastapi import BackgroundTasks
from tests.support import AwsStack, JsonLogs, compose

WARNING = (
    "OFFLOAD_TASK_QUEUE_URL is not set: running tasks in-process, NOT durable "
    "(set the queue URLs, or run the local system: `offload run`)"
)
timeline: list[Any] = []


KIND = "tests_in_process_count"


@task(name=KIND)
def count(label: str, times: int) -> str:
    timeline.append(("task", label, times))
    if times == 0:
        raise ValueError("nothing to count")
    return label * times


class RecordResponseSent:
    """ASGI middleware: notes on the timeline when the response's last byte has been sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                timeline.append("response sent")

        await self.app(scope, receive, recording_send)


def build_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RecordResponseSent)

    @app.post("/count/{label}")
    async def start_count(label: str, times: str, background_tasks: BackgroundTasks) -> Any:
        task_id = background_tasks.add_task(count, label, times=times)  # "3": validated to 3
        return {"task_id": str(task_id)}

    return app


@pytest.fixture
def fresh() -> Iterator[None]:
    timeline.clear()
    yield
    timeline.clear()


def test_without_a_queue_the_task_runs_in_process_after_the_response(
    env: None, fresh: None, json_logs: JsonLogs
) -> None:
    # Given plain uvicorn-style serving with no queue URL and no table (env: no OFFLOAD_*)
    with TestClient(build_app()) as client:
        # When two requests add a task
        first = client.post("/count/ab", params={"times": "3"})
        second = client.post("/count/c", params={"times": "1"})

    # Then each is answered, and its task runs afterwards with its validated arguments
    assert (first.status_code, second.status_code) == (200, 200)
    assert timeline == ["response sent", ("task", "ab", 3), "response sent", ("task", "c", 1)]
    # And the logs say once, as a warning, that nothing is durable
    [warning] = [r for r in json_logs.records if r.get("message") == WARNING]
    assert warning["level"] == "WARNING"
    done = [r["task_id"] for r in json_logs.find("in-process task succeeded") if r["kind"] == KIND]
    assert done == [first.json()["task_id"], second.json()["task_id"]]


def test_a_failing_in_process_task_is_logged_not_raised(
    env: None, fresh: None, json_logs: JsonLogs
) -> None:
    # When a task fails after its response went out
    with TestClient(build_app()) as client:
        response = client.post("/count/x", params={"times": "0"})

    # Then the client had its answer, and the failure is logged with the task's keys
    assert response.status_code == 200
    assert timeline == ["response sent", ("task", "x", 0)]
    [error] = json_logs.find("in-process task failed; it will not be retried")
    assert (error["level"], error["task_id"], error["kind"]) == (
        "ERROR",
        response.json()["task_id"],
        KIND,
    )
    assert "nothing to count" in error["exception"]


def test_on_lambda_without_a_queue_the_request_is_refused(
    env: None, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same app inside a Lambda function whose queue URL is missing
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "offload-dev-ApiFunction-Xq1bR7vC3uJ9")

    with TestClient(build_app()) as client:
        response = client.post("/count/ab", params={"times": "3"})

    # Then it answers 503 with the reason, and nothing ran
    assert response.status_code == 503
    assert response.json()["detail"].startswith("OFFLOAD_TASK_QUEUE_URL is not set")
    assert timeline == ["response sent"]


def test_with_a_tasks_table_the_in_process_task_is_recorded(
    aws: AwsStack, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a tasks table but no task queue
    monkeypatch.setenv("OFFLOAD_TASK_QUEUE_URL", "")
    compose(monkeypatch)

    with TestClient(build_app()) as client:
        response = client.post("/count/ab", params={"times": "2"})

    # Then nothing is queued, and the task's status is recorded as it runs
    assert response.status_code == 200
    assert aws.receive_all(aws.task_queue) == []
    record = aws.task(response.json()["task_id"])
    assert record is not None
    assert (record["state"], record["kind"], record["result"]) == ("succeeded", KIND, '"abab"')

    # And a task that fails is recorded as failed, with the error
    with TestClient(build_app()) as client:
        failing = client.post("/count/ab", params={"times": "0"})
    record = aws.task(failing.json()["task_id"])
    assert record is not None
    assert (record["state"], record["error"]) == ("failed", "ValueError: nothing to count")


def test_without_a_tasks_table_the_status_route_says_why_not_500(env: None) -> None:
    # Given an app with the library's status route and nothing configured (plain uvicorn)
    from uuid import uuid4

    from offload.status import router

    app = FastAPI()
    app.include_router(router)

    # When a client asks for a task's status, then 503 names what is missing, not a 500
    response = TestClient(app).get(f"/tasks/{uuid4()}")
    assert response.status_code == 503
    assert "OFFLOAD_TASKS_TABLE is not set" in response.json()["detail"]
