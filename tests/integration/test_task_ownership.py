"""Only the caller who created a task (its JWT `sub`) can read it, through the Lambda handler.

On AWS the HTTP API's JWT authorizer puts the token's claims in the event
(requestContext.authorizer.jwt.claims); these tests give the events from events/ the claims
of two different users.
"""

import copy
import json
from typing import Any
from uuid import UUID

from api.main import handler
from offload.models import TaskState
from tests.integration.test_workers import received_event
from tests.support import AwsStack, EventLoader, installed
from workers import tasks as task_worker

ALICE = "5f1e6a2c-0b7d-4e3f-9a18-c2d4e6f8a0b1"
BOB = "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def as_caller(request: dict[str, Any], sub: str, scope: str) -> dict[str, Any]:
    """The event as API Gateway sends it once the JWT authorizer accepted `sub`'s token."""
    request = copy.deepcopy(request)
    request["requestContext"]["authorizer"] = {
        "jwt": {
            "claims": {
                "auth_time": "1764022190",
                "client_id": "4k2q9x7m1r5t8w3z6b0c",
                "exp": "1764025790",
                "iat": "1764022190",
                "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Xq1bR7vC3",
                "jti": "0e5d7c9b-3a1f-4e2d-8c6b-5a4f3e2d1c0b",
                "scope": scope,
                "sub": sub,
                "token_use": "access",
                "username": sub,
            },
            "scopes": [scope],
        }
    }
    return request


def at(request: dict[str, Any], method: str, path: str, body: Any = None) -> dict[str, Any]:
    """The event for another route of the same stage (`path` without the stage)."""
    request = copy.deepcopy(request)
    stage = request["requestContext"]["stage"]
    request["rawPath"] = request["requestContext"]["http"]["path"] = f"/{stage}{path}"
    request["requestContext"]["http"]["method"] = method
    request["pathParameters"] = {"proxy": path.lstrip("/")}
    if body is not None:
        request["body"] = json.dumps(body)
        request["headers"]["content-length"] = str(len(request["body"]))
    return request


def read(event: EventLoader, path: str, sub: str | None, context: Any) -> dict[str, Any]:
    request = at(event("api-get-task.json"), "GET", path)
    if sub is not None:
        request = as_caller(request, sub, "offload/tasks.read")
    response: dict[str, Any] = handler(request, context)
    return response


def test_a_task_is_readable_by_its_creator_only(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given a task Alice created through the API
    created = handler(
        as_caller(event("api-emails.json"), ALICE, "offload/tasks.write"), lambda_context
    )
    assert created["statusCode"] == 202, created["body"]
    task_id = json.loads(created["body"])["task_id"]
    # (no record yet: until a worker claims the task, its id answers for it)
    assert aws.task(task_id) is None

    # When Alice reads it, then she gets its status
    mine = read(event, f"/tasks/{task_id}", ALICE, lambda_context)
    assert mine["statusCode"] == 200, mine["body"]
    assert json.loads(mine["body"])["state"] == "queued"
    assert "owner" not in json.loads(mine["body"])

    # When Bob (or a caller without a subject) reads it, then it does not exist for them:
    # the same 404 as a task that was never created
    missing = "00000000-0000-4000-8000-000000000000"
    never = read(event, f"/tasks/{missing}", BOB, lambda_context)
    for sub in (BOB, None):
        theirs = read(event, f"/tasks/{task_id}", sub, lambda_context)
        assert theirs["statusCode"] == never["statusCode"] == 404
        assert json.loads(theirs["body"]) == {"detail": f"no task {task_id}"}


def test_a_task_without_an_owner_stays_readable(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given a task recorded by a worker (a message that did not come through the API)
    task_id = UUID("6f1c2b9e-8d4a-4c3e-9b7f-2a5d1e0c8b41")
    installed().tasks.claim(task_id, "write_log", attempts=1, lease_seconds=30)

    # When any caller reads it, then they get its status
    for sub in (ALICE, BOB):
        response = read(event, f"/tasks/{task_id}", sub, lambda_context)
        assert response["statusCode"] == 200, response["body"]
        assert json.loads(response["body"])["state"] == "running"


def test_the_worker_keeps_the_owner(aws: AwsStack, event: EventLoader, lambda_context: Any) -> None:
    # Given Alice's task, when the TaskWorker runs it (its claim records the task)
    created = handler(
        as_caller(event("api-send-notification.json"), ALICE, "offload/tasks.write"),
        lambda_context,
    )
    task_id = UUID(json.loads(created["body"])["task_id"])
    assert task_worker.handler(received_event(aws.task_queue), lambda_context) == {
        "batchItemFailures": []
    }
    record = aws.task(task_id)
    assert record is not None and (record["state"], record["owner"]) == ("succeeded", ALICE)

    # Then it is still hers alone
    assert read(event, f"/tasks/{task_id}", ALICE, lambda_context)["statusCode"] == 200
    assert read(event, f"/tasks/{task_id}", BOB, lambda_context)["statusCode"] == 404


def test_an_upload_and_its_result_links_are_its_creators_only(
    aws: AwsStack, event: EventLoader, lambda_context: Any
) -> None:
    # Given an upload Alice created, which a worker has finished
    offer = {"filename": "orders.csv", "content_type": "text/csv", "size": 10}
    request = at(event("api-emails.json"), "POST", "/uploads", offer)
    created = handler(as_caller(request, ALICE, "offload/tasks.write"), lambda_context)
    assert created["statusCode"] == 201, created["body"]
    upload_id = UUID(json.loads(created["body"])["upload_id"])
    # (before the file arrives it is recorded as hers, queued: one write per upload, so that it
    # is in her GET /tasks; the worker records it from the S3 event, which names no owner)
    record = aws.task(upload_id)
    assert record is not None and (record["state"], record["owner"]) == ("queued", ALICE)
    waiting = read(event, f"/uploads/{upload_id}", ALICE, lambda_context)
    assert waiting["statusCode"] == 200, waiting["body"]
    assert json.loads(waiting["body"])["state"] == "queued"
    assert read(event, f"/uploads/{upload_id}", BOB, lambda_context)["statusCode"] == 404
    # the worker records it from the S3 event, which names no owner
    tasks = installed().tasks
    claim = tasks.claim(upload_id, "process_upload", attempts=1, lease_seconds=30, origin="k")
    assert claim.token is not None
    tasks.finish(upload_id, claim.token, TaskState.SUCCEEDED, attempts=1, result={"rows": {}})

    # When Alice reads it, then she gets the presigned links to the results
    mine = read(event, f"/uploads/{upload_id}", ALICE, lambda_context)
    assert mine["statusCode"] == 200, mine["body"]
    assert set(json.loads(mine["body"])["results"]) == {"cleaned_csv", "summary_json"}
    listed = json.loads(read(event, "/tasks", ALICE, lambda_context)["body"])["tasks"]
    assert [t["task_id"] for t in listed] == [str(upload_id)]

    # When Bob reads it, then it does not exist for him, and no link is handed out
    theirs = read(event, f"/uploads/{upload_id}", BOB, lambda_context)
    assert theirs["statusCode"] == 404
    assert json.loads(theirs["body"]) == {"detail": f"no upload {upload_id}"}
