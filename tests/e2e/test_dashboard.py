"""The local system's dashboard in a real browser: Debian's Chromium, headless, driven by
Playwright (never `playwright install`: no browser is downloaded).

`make test` installs Chromium with apt-get when it is missing and it runs as root; elsewhere
this test skips and says why, except under CI (CI=true), where a missing browser fails it.
OFFLOAD_DASHBOARD_SCREENSHOT=docs/dashboard.png saves the README's screenshot.
"""

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import requests

from tests.e2e.conftest import LocalSystem
from tests.support import REGION, SENDER

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("OFFLOAD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespaces for Chromium's sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# How long the page may take to show what the workers did (it refreshes every 2 s).
SEEN_MS = 20_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the dashboard's browser test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: `make setup` installs requirements/dev.lock")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's `chromium` with apt-get "
            "when it runs as root; otherwise install it, or point OFFLOAD_CHROMIUM at one"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: "Browser") -> Iterator["Page"]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(SEEN_MS)
    yield opened
    context.close()


def _post(system: LocalSystem, path: str, **kwargs: Any) -> str:
    response = requests.post(f"{system.api_url}{path}", timeout=10, **kwargs)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


@contextlib.contextmanager
def sender_unverified(system: LocalSystem) -> Iterator[None]:
    """The embedded SES without the sender's identity: SES rejects every email (permanent)."""
    ses = boto3.client(
        "sesv2",
        endpoint_url=system.moto_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    ses.delete_email_identity(EmailIdentity=SENDER)
    try:
        yield
    finally:
        ses.create_email_identity(EmailIdentity=SENDER)


def _wait_for_state(system: LocalSystem, task_id: str, state: str) -> None:
    deadline = time.monotonic() + SEEN_MS / 1000
    while time.monotonic() < deadline:
        found = requests.get(f"{system.api_url}/tasks/{task_id}", timeout=5).json()
        if found.get("state") == state:
            return
        time.sleep(0.2)
    pytest.fail(f"task {task_id} is {found.get('state')}, not {state}:\n{system.output()}")


def test_tasks_show_live_and_a_dead_task_is_redriven_from_the_page(
    local_system: LocalSystem, page: "Page"
) -> None:
    from playwright.sync_api import expect

    dashboard = f"{local_system.api_url}/dashboard"
    # Given the dashboard open on the tasks, when a client creates tasks through the API
    page.goto(dashboard)
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    notification = _post(local_system, "/send-notification/dash-ann@example.com")
    email = _post(
        local_system,
        "/emails",
        json={
            "to": "dash-bob@example.com",
            "subject": "Dashboard <hello>",
            "text": "Hello in text",
            "html": "<h1>Hello in HTML</h1><script>document.title='scripted'</script>",
        },
    )

    # Then the page shows them reaching `succeeded` without a reload
    for task_id in (notification, email):
        expect(page.locator(f'tr[data-task-id="{task_id}"] .state')).to_have_text("succeeded")

    # And a task page shows its arguments, result and the workers' log lines
    page.get_by_role("link", name=f"…{email[-8:]}").click()
    expect(page.get_by_role("heading", name=f"Task {email}")).to_be_visible()
    expect(page.locator("pre.block").first).to_contain_text('"to": "dash-bob@example.com"')
    expect(page.locator("table.log")).to_contain_text("task succeeded")

    # And the email is rendered, its HTML sandboxed (no script runs)
    page.get_by_role("link", name="Emails").click()
    page.get_by_role("link", name="Dashboard <hello>").click()
    frame = page.frame_locator("iframe.email")
    expect(frame.get_by_role("heading", name="Hello in HTML")).to_be_visible()
    assert page.locator("iframe.email").get_attribute("sandbox") == ""
    assert "scripted" not in page.title()

    # When an email task dies (SES rejects its sender: a permanent error, straight to the DLQ)
    with sender_unverified(local_system):
        dead = _post(
            local_system,
            "/emails",
            json={"to": "dash-carol@example.com", "subject": "Redriven", "text": "again"},
        )
        _wait_for_state(local_system, dead, "dead")
    page.goto(f"{dashboard}?state=dead")
    expect(page.locator(f'tr[data-task-id="{dead}"] .state')).to_have_text("dead")

    # And the sender is verified again, and the operator redrives the email DLQ from the page
    page.get_by_role("link", name="Queues").click()
    redrive = page.get_by_role("button", name="Redrive email")
    expect(redrive).to_be_enabled()  # the DLQ count is live
    redrive.focus()
    page.keyboard.press("Enter")  # the keyboard is enough

    # Then the page says what the redrive did, and the task runs again and succeeds
    expect(page.get_by_role("status")).to_contain_text("email: 1 message(s) redriven")
    page.goto(f"{dashboard}/tasks/{dead}")
    expect(page.locator("[data-state]")).to_have_text("succeeded")
    expect(page.locator("table.log")).to_contain_text("task succeeded")

    screenshot = os.environ.get("OFFLOAD_DASHBOARD_SCREENSHOT")
    if screenshot:
        page.goto(dashboard)
        expect(page.locator(f'tr[data-task-id="{dead}"] .state')).to_have_text("succeeded")
        page.screenshot(path=screenshot)


def test_a_cross_site_post_cannot_purge(local_system: LocalSystem, page: "Page") -> None:
    # Given a page of another site (another origin) that posts a form to the dashboard
    evil = requests.Request(
        "POST", f"{local_system.api_url}/dashboard/queues/email/purge"
    ).prepare()
    page.set_content(
        f'<form method="post" action="{evil.url}"><button>go</button></form>',
    )
    # When the browser submits it, the dashboard refuses (403)
    with page.expect_response(evil.url or "") as answer:
        page.get_by_role("button", name="go").click()
    assert answer.value.status == 403
