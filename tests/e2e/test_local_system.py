"""End to end: the real local system (moto server from template.yaml, uvicorn, pollers)."""

import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests

from tests.e2e.conftest import LocalSystem
from tests.support import REGION, ROOT, SENDER

pytestmark = pytest.mark.e2e

TASK_TIMEOUT = 45.0


def wait_for_final_state(system: LocalSystem, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + TASK_TIMEOUT
    seen: list[str] = []
    while time.monotonic() < deadline:
        response = requests.get(status_url, timeout=5)
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        if not seen or seen[-1] != task["state"]:
            seen.append(task["state"])
        if task["state"] in {"succeeded", "failed", "dead"}:
            return task
        time.sleep(0.2)
    pytest.fail(f"task still {seen} after {TASK_TIMEOUT} s:\n{system.output()}")


def sent_emails(system: LocalSystem) -> list[dict[str, Any]]:
    data = requests.get(f"{system.moto_url}/moto-api/data.json", timeout=5).json()
    messages: list[dict[str, Any]] = data.get("ses", {}).get("Message", [])
    return messages


def task_ids_created_since(system: LocalSystem, since: datetime) -> set[str]:
    """The ids of the task records created at or after `since`, read from moto's DynamoDB."""
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=system.moto_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # moto's dummy credentials
    )
    [table] = [t for t in dynamodb.list_tables()["TableNames"] if "TasksTable" in t]
    items = dynamodb.scan(TableName=table)["Items"]
    return {
        item["task_id"]["S"]
        for item in items
        if datetime.fromisoformat(item["created_at"]["S"]) >= since
    }


def local_url(system: LocalSystem, status_url: str) -> str:
    """The status URL the API returned, which must point at the API itself."""
    assert status_url.startswith(system.api_url + "/tasks/"), status_url
    return status_url


def test_post_emails_is_sent_by_the_worker(local_system: LocalSystem) -> None:
    # Given the running system, when a client posts an email
    response = requests.post(
        f"{local_system.api_url}/emails",
        json={"to": "e2e-ann@example.com", "subject": "E2E hello", "text": "Sent end to end"},
        timeout=10,
    )

    # Then it is accepted, queued, and the EmailWorker sends it
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "queued"
    task = wait_for_final_state(local_system, local_url(local_system, accepted["status_url"]))
    assert task["state"] == "succeeded", task
    assert task["kind"] == "send_email"
    assert task["attempts"] == 1
    # And the email is in the embedded SES, from the configured sender
    [email] = [m for m in sent_emails(local_system) if m["subject"] == "E2E hello"]
    assert email["source"] == SENDER
    assert email["destinations"]["ToAddresses"] == ["e2e-ann@example.com"]
    assert "Sent end to end" in email["body"]
    # And `python -m offload.local emails` lists it
    listing = subprocess.run(
        [sys.executable, "-m", "offload.local", "emails", "--moto-url", local_system.moto_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "To: e2e-ann@example.com" in listing
    assert "Subject: E2E hello" in listing


def test_send_notification_runs_write_log(local_system: LocalSystem) -> None:
    response = requests.post(
        f"{local_system.api_url}/send-notification/e2e-bob@example.com", timeout=10
    )

    assert response.status_code == 202, response.text
    task = wait_for_final_state(
        local_system, local_url(local_system, response.json()["status_url"])
    )
    assert task["state"] == "succeeded", task
    assert task["kind"] == "write_log"
    # Worker INFO lines are hidden without -v, and none is printed twice (plain, by the root
    # logger): the poller's plain handler must not repeat the workers' Powertools lines
    plain = [line.strip() for line in local_system.output().splitlines()]
    assert not any(line.endswith("] task started") for line in plain), local_system.output()


def test_email_with_defaults_is_sent(local_system: LocalSystem) -> None:
    response = requests.post(f"{local_system.api_url}/email/e2e-carol@example.com", timeout=10)

    assert response.status_code == 202, response.text
    task = wait_for_final_state(
        local_system, local_url(local_system, response.json()["status_url"])
    )
    assert task["state"] == "succeeded", task
    assert any(
        m["destinations"]["ToAddresses"] == ["e2e-carol@example.com"]
        for m in sent_emails(local_system)
    )


def test_invalid_email_is_422_and_nothing_is_sent(local_system: LocalSystem) -> None:
    since = datetime.now(UTC)
    before = len(sent_emails(local_system))

    # When an invalid email is posted
    response = requests.post(
        f"{local_system.api_url}/emails",
        json={"to": "not-an-address", "subject": "Never", "text": "x"},
        timeout=10,
    )

    # Then it is refused, naming the field
    assert response.status_code == 422
    assert ["body", "to"] in [e["loc"] for e in response.json()["detail"]]

    # And when a valid email follows it on the same queue and has been sent (anything the
    # invalid request had queued would have reached the EmailWorker by then)
    valid = requests.post(
        f"{local_system.api_url}/emails",
        json={"to": "e2e-dave@example.com", "subject": "After the 422", "text": "Only me"},
        timeout=10,
    )
    assert valid.status_code == 202, valid.text
    task = wait_for_final_state(local_system, local_url(local_system, valid.json()["status_url"]))
    assert task["state"] == "succeeded", task

    # Then SES sent exactly that one email, and the only task recorded since is the valid one
    emails = sent_emails(local_system)
    assert len(emails) == before + 1
    assert [m["destinations"]["ToAddresses"] for m in emails[before:]] == [["e2e-dave@example.com"]]
    assert task_ids_created_since(local_system, since) == {valid.json()["task_id"]}


def test_unknown_task_is_404(local_system: LocalSystem) -> None:
    response = requests.get(
        f"{local_system.api_url}/tasks/00000000-0000-4000-8000-000000000000", timeout=10
    )

    assert response.status_code == 404


def test_the_banner_shows_this_apps_routes_and_the_make_targets(local_system: LocalSystem) -> None:
    # The runner runs on free ports here: the banner says how to point the tools at them
    banner = local_system.output()
    assert "Offload is running locally." in banner
    assert "/emails" in banner and "/send-notification/{email}" in banner
    assert "offload emails    # what the embedded SES has sent (here: make emails)" in banner
    assert "export OFFLOAD_API_PORT=" in banner and "OFFLOAD_MOTO_PORT=" in banner
