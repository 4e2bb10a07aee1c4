"""What deploys, run: every function's built package (sam build), under the Lambda runtime
emulator with python3.13 and only the package, the Lambda runtime's own packages and the
standard library on its path, invoked with its events from events/.

A dependency missing from src/requirements/*.txt, a module src/Makefile does not copy or
bytecode python3.13 cannot load fails here, where the source tests (which import src/ with the
development environment) pass.
"""

import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest

from offload.local.build import find_sam, sam_build
from offload.local.lambda_runtime import sqs_event
from tests.built.conftest import Artifacts
from tests.support import EVENTS, ROOT, TEMPLATE

pytestmark = pytest.mark.built

# Each event of events/, the function it is for, and what the function answers: the HTTP
# status for the API, the response for the workers.
NO_FAILURES = {"batchItemFailures": []}
EXPECTED: dict[str, tuple[str, Any]] = {
    "api-health.json": ("ApiFunction", 200),
    "api-email.json": ("ApiFunction", 202),
    "api-emails.json": ("ApiFunction", 202),
    "api-emails-invalid.json": ("ApiFunction", 422),
    "api-get-task.json": ("ApiFunction", 404),
    "api-send-notification.json": ("ApiFunction", 202),
    "sqs-email-worker.json": ("EmailWorker", NO_FAILURES),
    "sqs-task-worker.json": ("TaskWorker", NO_FAILURES),
    "s3-put.json": ("UploadWorker", {"processed": 1}),
    "sqs-upload-worker.json": ("UploadWorker", NO_FAILURES),
    "sqs-upload-poison.json": ("UploadWorker", NO_FAILURES),
    "sqs-upload-test-event.json": ("UploadWorker", NO_FAILURES),
    "sqs-upload-unicode-key.json": ("UploadWorker", NO_FAILURES),
}
EVENTS_BUCKET = "offload-uploads-9b2f3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"  # the bucket events/ name


def client(artifacts: Artifacts, service: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=artifacts.moto_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def uploaded_keys(event: dict[str, Any]) -> list[str]:
    """The object keys an S3 event names (directly, or in the SQS messages' bodies)."""
    records = event["Records"]
    if records and records[0].get("eventSource") == "aws:sqs":
        records = [r for m in records for r in json.loads(m["body"]).get("Records", [])]
    return [unquote_plus(r["s3"]["object"]["key"]) for r in records]


def aimed_at_the_stack(artifacts: Artifacts, name: str) -> bytes:
    """The event, its uploads put into the stack's bucket first (their upload id, the key's
    second part, is their task's id)."""
    text = (EVENTS / name).read_text()
    if EVENTS_BUCKET not in text:
        return text.encode()
    bucket = artifacts.stack.resources["UploadBucket"]
    for key in uploaded_keys(json.loads(text)):
        client(artifacts, "s3").put_object(Bucket=bucket, Key=key, Body=b"region,amount\nEU,3\n")
    return text.replace(EVENTS_BUCKET, bucket).encode()


def test_every_event_is_invoked_here() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in EVENTS.glob("*.json"))


@pytest.mark.parametrize("event", sorted(EXPECTED))
def test_each_built_function_answers_its_events(artifacts: Artifacts, event: str) -> None:
    # Given the built package of the event's function, warm or cold
    function, expected = EXPECTED[event]
    emulator = artifacts.emulator(function)

    # When the event is sent to it as Lambda sends it
    result = emulator.invoke(aimed_at_the_stack(artifacts, event))

    # Then it answers as the source tests say the handler does
    log = "\n".join(artifacts.output[-40:])
    assert not result.error, f"{function} failed on {event}: {result.payload!r}\n{log}"
    answer = result.json()
    if function == "ApiFunction":
        assert answer["statusCode"] == expected, (answer, log)
    else:
        assert answer == expected, log


def api_event(method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
    """An HTTP API (payload 2.0) event for one request, from events/api-health.json's shape."""
    event = json.loads((EVENTS / "api-health.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/dev{path}"
    event["requestContext"]["http"]["method"] = method
    event["routeKey"] = f"{method} /{{proxy+}}"
    if body is not None:
        event["body"] = json.dumps(body)
        event["headers"]["content-type"] = "application/json"
    return json.dumps(event).encode()


def test_an_email_goes_end_to_end_through_the_built_api_and_email_worker(
    artifacts: Artifacts,
) -> None:
    # Given an email queued through the built API
    api = artifacts.emulator("ApiFunction")
    ses = client(artifacts, "ses")
    sent_before = sum(p["DeliveryAttempts"] for p in ses.get_send_statistics()["SendDataPoints"])
    email = {"to": "carol@example.com", "subject": "Built", "text": "From the artifacts."}
    queued = api.invoke(api_event("POST", "/emails", email)).json()
    assert queued["statusCode"] == 202, queued
    task_id = json.loads(queued["body"])["task_id"]

    # When the EmailWorker's trigger hands the queued message to the built EmailWorker
    sqs = client(artifacts, "sqs")
    queue = artifacts.stack.resources["EmailQueue"]
    received = sqs.receive_message(
        QueueUrl=queue,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=5,
        MessageSystemAttributeNames=["All"],
    )["Messages"]
    # (the queue also holds the emails that the API's events above queued)
    messages = [m for m in received if json.loads(m["Body"])["task_id"] == task_id]
    assert len(messages) == 1, received
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    event = sqs_event(messages, queue_arn["Attributes"]["QueueArn"])
    worker = artifacts.emulator("EmailWorker").invoke(json.dumps(event).encode())

    # Then SES sent it, and the built API reports the task succeeded
    assert worker.json() == NO_FAILURES, artifacts.output[-20:]
    sent = sum(p["DeliveryAttempts"] for p in ses.get_send_statistics()["SendDataPoints"])
    assert sent == sent_before + 1
    status = api.invoke(api_event("GET", f"/tasks/{task_id}")).json()
    assert status["statusCode"] == 200, status
    assert json.loads(status["body"])["state"] == "succeeded"


def test_a_package_built_without_a_dependency_fails_here(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    # Given the EmailWorker built from this tree, but with pydantic-settings (which the settings
    # import) left out of src/requirements/worker.txt
    tree = tmp_path / "tree"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=skip)
    shutil.copy(TEMPLATE, tree / "template.yaml")
    requirements = tree / "src/requirements/worker.txt"
    lines = requirements.read_text().splitlines(keepends=True)
    requirements.write_text("".join(x for x in lines if not x.startswith("pydantic-settings==")))
    sam_build(find_sam(ROOT), tree / "template.yaml", tree / "build", "EmailWorker")
    emulator = artifacts.emulator("EmailWorker", package=tree / "build/EmailWorker")

    # When its event is invoked
    try:
        result = emulator.invoke((EVENTS / "sqs-email-worker.json").read_bytes())
    finally:
        emulator.stop()

    # Then the invoke fails, naming the module, where the package built from the tree answers
    assert result.error
    error = result.json()
    assert error["errorType"] == "Runtime.ImportModuleError", error
    assert "pydantic_settings" in error["errorMessage"]
