"""FastAPI's BackgroundTasks example becomes durable by changing one import, nothing else."""

import types
from typing import Any

import boto3
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from offload.fastapi import BackgroundTasks
from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.registry import NotSendableError
from tests.support import REGION, AwsStack, JsonLogs, task_message
from workers import tasks as task_worker

# The example from FastAPI's docs, with write_log being the registered task that ships with
# Offload. Only the BackgroundTasks import differs between the two apps below.
SEED = """
from fastapi import FastAPI
{import_line}
from example_app.notifications import write_log

app = FastAPI()


@app.post("/send-notification/{{email}}")
async def send_notification(email: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(write_log, f"Notification sent to {{email}}")
    return {{"message": "Notification sent in the background"}}
"""
FASTAPI_IMPORT = "from fastapi import BackgroundTasks"
OFFLOAD_IMPORT = "from offload.fastapi import BackgroundTasks"


def build_app(import_line: str) -> FastAPI:
    module = types.ModuleType(f"seed_{abs(hash(import_line))}")
    exec(SEED.format(import_line=import_line), module.__dict__)
    app: FastAPI = module.app
    return app


def test_the_two_apps_differ_only_in_the_import() -> None:
    fastapi_lines = SEED.format(import_line=FASTAPI_IMPORT).splitlines()
    offload_lines = SEED.format(import_line=OFFLOAD_IMPORT).splitlines()

    changed = [(a, b) for a, b in zip(fastapi_lines, offload_lines, strict=True) if a != b]

    assert changed == [(FASTAPI_IMPORT, OFFLOAD_IMPORT)]


def test_fastapi_background_tasks_run_in_process_and_queue_nothing(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    # The baseline: the work runs inside the request's process and nothing is durable.
    with TestClient(build_app(FASTAPI_IMPORT)) as client:
        response = client.post("/send-notification/ann@example.com")

    assert response.status_code == 200
    assert json_logs.find("Notification sent to ann@example.com")
    assert aws.receive_all(aws.task_queue) == []


def test_offload_background_tasks_enqueue_durably_and_a_worker_runs_them(
    aws: AwsStack, json_logs: JsonLogs
) -> None:
    # Given the seed app with Offload's import
    with TestClient(build_app(OFFLOAD_IMPORT)) as client:
        # When a client calls it
        response = client.post("/send-notification/ann@example.com")

    # Then it answers as before, but the task ran nowhere yet: it is on SQS (queued)
    assert response.status_code == 200
    assert response.json() == {"message": "Notification sent in the background"}
    assert not json_logs.find("Notification sent to ann@example.com")
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(
        QueueUrl=aws.task_queue,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )["Messages"]
    [message] = [task_message(m) for m in messages]
    assert message.kind == "write_log"
    assert message.payload == {"message": "Notification sent to ann@example.com"}
    assert aws.task(message.task_id) is None  # no record until a worker claims it

    # And the TaskWorker, given that message as Lambda would give it, writes the log line
    arn = sqs.get_queue_attributes(QueueUrl=aws.task_queue, AttributeNames=["QueueArn"])
    event = sqs_event(messages, arn["Attributes"]["QueueArn"])  # type: ignore[arg-type]
    result = task_worker.handler(event, LambdaContext("offload-dev-TaskWorker", 30))

    assert result == {"batchItemFailures": []}
    [line] = json_logs.find("Notification sent to ann@example.com")
    assert line["task_id"] == str(message.task_id)
    status = aws.task(message.task_id)
    assert status is not None and status["state"] == "succeeded"


def test_several_add_task_calls_are_sent_together(aws: AwsStack) -> None:
    from example_app.notifications import write_log

    app = FastAPI()

    @app.post("/notify-all")
    async def notify_all(background_tasks: BackgroundTasks) -> dict[str, Any]:
        ids = [background_tasks.add_task(write_log, f"hello {n}") for n in range(12)]
        return {"task_ids": [str(i) for i in ids]}

    with TestClient(app) as client:
        response = client.post("/notify-all")

    assert response.status_code == 200
    queued = {str(task_message(m).task_id) for m in aws.receive_all(aws.task_queue)}
    assert queued == set(response.json()["task_ids"])


def test_add_task_refuses_a_function_a_worker_could_not_import_and_enqueues_nothing(
    aws: AwsStack,
) -> None:
    def not_a_task(message: str) -> None:
        """A nested function: a worker could never import it, so a message must not name it."""

    app = FastAPI()

    @app.post("/send-notification/{email}")
    async def send_notification(email: str, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(not_a_task, f"Notification sent to {email}")

    with (
        TestClient(app) as client,
        pytest.raises(NotSendableError, match="not_a_task cannot be sent to a worker"),
    ):
        client.post("/send-notification/ann@example.com")

    assert aws.receive_all(aws.task_queue) == []
    assert aws.table_items(aws.tasks_table) == []
