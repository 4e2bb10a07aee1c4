"""The `offload` command against the running local system: tasks through the API, emails and the
DLQs through its embedded AWS; tables for people, JSON for scripts, and exit codes.

GET /tasks, DELETE /tasks/{id} and POST /tasks/{id}/retry come with issue 12: until the API has
them, the tests of those commands skip, saying so (the command exits 4, naming the route)."""

import json
import time
from typing import Any
from uuid import uuid4

import boto3
import pytest
import requests

from offload.cli.output import ExitCode
from offload.models import TaskMessage
from tests.e2e.conftest import LocalSystem
from tests.support import REGION, offload_command

pytestmark = pytest.mark.e2e


def command(system: LocalSystem, *args: str) -> Any:
    """`offload ARGS` on this local system: its API, and its embedded AWS for emails and dlq."""
    moto_port = system.moto_url.rsplit(":", 1)[1]
    return offload_command("--api", system.api_url, *args, env={"OFFLOAD_MOTO_PORT": moto_port})


def skip_without_route(result: Any) -> None:
    if result.exit_code == ExitCode.NOT_FOUND and "has no route" in result.stderr:
        pytest.skip(f"the API lacks the route (issue 12): {result.stderr.strip()}")


def notification(system: LocalSystem) -> str:
    response = requests.post(f"{system.api_url}/send-notification/cli@example.com", timeout=10)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def dead_task(system: LocalSystem) -> str:
    """A task that dies at once on the local system: its message names no registered task."""
    sqs = boto3.client(
        "sqs",
        endpoint_url=system.moto_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    [queue] = sqs.list_queues(QueueNamePrefix="offload-local-TaskQueue")["QueueUrls"]
    message = TaskMessage(kind="no_such_task_cli", payload={})
    sqs.send_message(QueueUrl=queue, MessageBody=message.model_dump_json())
    return str(message.task_id)


def test_show_waits_for_a_task_and_prints_it(local_system: LocalSystem) -> None:
    # Given a task created through the API
    task_id = notification(local_system)

    # When the command waits for it, then it exits 0 once the task succeeded, with a table
    shown = command(local_system, "tasks", "show", task_id, "--wait", "--timeout", "60")

    assert shown.exit_code == 0, shown.output
    rows = {line.split("  ")[0]: line for line in shown.stdout.splitlines()}
    assert task_id in rows["task id"]
    assert "write_log" in rows["kind"] and "succeeded" in rows["state"]
    # And --json is the API's answer, for scripts
    as_json = command(local_system, "tasks", "show", task_id, "--json")
    assert as_json.exit_code == 0
    assert (
        json.loads(as_json.stdout)
        == requests.get(f"{local_system.api_url}/tasks/{task_id}", timeout=10).json()
    )


def test_show_of_an_unknown_task_exits_4(local_system: LocalSystem) -> None:
    missing = str(uuid4())

    result = command(local_system, "tasks", "show", missing)

    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stderr.strip() == f"no task {missing}"


def test_a_dead_task_waited_for_exits_1_and_is_in_the_dlq(local_system: LocalSystem) -> None:
    # Given a task that dies
    task_id = dead_task(local_system)

    # When the command waits for it, then it exits 1 and shows the error
    shown = command(local_system, "tasks", "show", task_id, "--wait", "--timeout", "60")
    assert shown.exit_code == ExitCode.FAILED, shown.output
    assert "dead" in shown.stdout and "no_such_task_cli" in shown.stdout

    # And `offload dlq list` (the local system by default) lists its message
    deadline = time.monotonic() + 30
    while True:
        listed = command(local_system, "dlq", "list", "--queue", "tasks", "--json")
        assert listed.exit_code == 0, listed.output
        [tasks] = json.loads(listed.stdout)
        if task_id in [m["task_id"] for m in tasks["messages"]] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    [letter] = [m for m in tasks["messages"] if m["task_id"] == task_id]
    assert letter["kind"] == "no_such_task_cli" and "no task named" in letter["error"]

    # And retry queues it again under the same id (it dies again: its kind is still unknown)
    retried = command(local_system, "tasks", "retry", task_id)
    skip_without_route(retried)
    assert retried.exit_code == 0, retried.output
    assert f"task {task_id} queued again" in retried.stdout


def test_redrive_and_purge_the_local_dlqs(local_system: LocalSystem) -> None:
    # Given a dead task whose message is in the local TaskDeadLetterQueue
    task_id = dead_task(local_system)
    deadline = time.monotonic() + 30
    while task_id not in command(local_system, "dlq", "list", "--queue", "tasks").stdout:
        assert time.monotonic() < deadline, "the dead task never reached the DLQ"
        time.sleep(0.5)

    # When it is redriven, then it runs again (and dies again: its kind is unknown)
    redriven = command(local_system, "dlq", "redrive", "--queue", "tasks")
    assert redriven.exit_code == 0, redriven.output
    assert "message(s) redriven" in redriven.stdout

    # And purge empties every DLQ
    purged = command(local_system, "dlq", "purge", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "tasks: DLQ purged" in purged.stdout and "email: DLQ purged" in purged.stdout


def test_list_shows_the_newest_tasks_and_pages_as_json(local_system: LocalSystem) -> None:
    # Given three tasks, run by now (a task is listed once a worker has recorded it: enqueueing
    # writes no record)
    created = [notification(local_system) for _ in range(3)]
    for task_id in created:
        waited = command(local_system, "tasks", "show", task_id, "--wait", "--timeout", "60")
        assert waited.exit_code == 0, waited.output

    # When they are listed
    result = command(local_system, "tasks", "list", "--kind", "write_log")
    skip_without_route(result)

    # Then the table shows them, newest first
    assert result.exit_code == 0, result.output
    ids = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert [i for i in ids if i in created] == created[::-1]
    # And --json with --all follows the cursor through pages of one, in the API's shape
    paged = command(
        local_system, "tasks", "list", "--kind", "write_log", "--limit", "1", "--all", "--json"
    )
    assert paged.exit_code == 0, paged.output
    listing = json.loads(paged.stdout)
    assert listing["next_cursor"] is None
    listed = [t["task_id"] for t in listing["tasks"]]
    assert set(created) <= set(listed) and len(listed) == len(set(listed))


def test_cancel_and_retry_of_a_finished_task_exit_5(local_system: LocalSystem) -> None:
    # Given a task that succeeded
    task_id = notification(local_system)
    waited = command(local_system, "tasks", "show", task_id, "--wait", "--timeout", "60")
    assert waited.exit_code == 0, waited.output

    # When it is cancelled or retried, then the API's 409 is exit 5, with its reason
    for action in ("cancel", "retry"):
        result = command(local_system, "tasks", action, task_id)
        skip_without_route(result)
        assert result.exit_code == ExitCode.CONFLICT, result.output
        assert "succeeded" in result.stderr


def test_emails_prints_each_email_and_json(local_system: LocalSystem) -> None:
    # Given an email the worker sent
    response = requests.post(
        f"{local_system.api_url}/emails",
        json={"to": "cli-ann@example.com", "subject": "CLI hello", "text": "From the CLI test"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert command(local_system, "tasks", "show", task_id, "--wait").exit_code == 0

    # When the emails are listed: a panel per email, and the same as JSON
    shown = command(local_system, "emails")
    as_json = command(local_system, "emails", "--json")

    assert shown.exit_code == 0 and as_json.exit_code == 0
    assert "To: cli-ann@example.com" in shown.stdout and "Subject: CLI hello" in shown.stdout
    [sent] = [m for m in json.loads(as_json.stdout) if m["subject"] == "CLI hello"]
    assert sent["destinations"]["ToAddresses"] == ["cli-ann@example.com"]
    assert "From the CLI test" in sent["body"]
