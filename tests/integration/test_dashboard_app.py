"""The local dashboard's app over HTTP (Starlette's test client) on the template's stack in
moto: what the pages show, and the guards (loopback Host only, same-origin POSTs only, every
value escaped, a 4xx naming the field)."""

import json
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from offload.local.dashboard import WithDashboard
from offload.local.dashboard.app import dashboard
from offload.local.task_log import MAX_LINES, TaskLog, serve
from offload.models import TaskState
from offload.wiring import Offload
from tests.support import AwsStack

BASE = "http://127.0.0.1:8000"


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("the dashboard's paths never reach the app")


@pytest.fixture
def client(offload: Offload) -> TestClient:
    return TestClient(dashboard(offload, task_log_url=None, moto_url=None), base_url=BASE)


def test_tasks_newest_first_filtered_and_paged(offload: Offload, client: TestClient) -> None:
    # Given three tasks, the newest with markup in its kind
    older, middle, newest = uuid4(), uuid4(), uuid4()
    offload.tasks.create(older, "write_log")
    offload.tasks.create(middle, "send_email")
    offload.tasks.create(newest, "<b>bold</b>")
    claim = offload.tasks.claim(middle, "send_email", attempts=1, lease_seconds=30)
    assert claim.token is not None
    assert offload.tasks.finish(middle, claim.token, TaskState.SUCCEEDED, attempts=1)

    # When the tasks page is read, they come newest first, the markup escaped
    page = client.get("/dashboard").text
    assert page.index(str(newest)) < page.index(str(middle)) < page.index(str(older))
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page

    # And the filters and the cursor narrow them
    by_state = client.get("/dashboard/tasks/live", params={"state": "succeeded"}).text
    assert str(middle) in by_state and str(older) not in by_state
    by_kind = client.get("/dashboard/tasks/live", params={"kind": "write_log"}).text
    assert str(older) in by_kind and str(middle) not in by_kind
    records, cursor = offload.tasks.list(None, limit=2)
    assert [r.task_id for r in records] == [newest, middle] and cursor
    rest, end = offload.tasks.list(None, limit=2, cursor=cursor)
    assert [r.task_id for r in rest] == [older] and end is None


def test_bad_query_is_400_naming_the_field(client: TestClient) -> None:
    response = client.get("/dashboard", params={"state": "lost"})
    assert response.status_code == 400 and response.text.startswith("state:")
    response = client.get("/dashboard", params={"kind": "k" * 129})
    assert response.status_code == 400 and response.text.startswith("kind:")


def test_only_loopback_hosts_are_answered(client: TestClient) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: refused
    assert client.get("/dashboard", headers={"host": "evil.example:8000"}).status_code == 400
    assert client.get("/dashboard", headers={"host": "localhost:8000"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://evil.example"},
        {},
    ],
)
def test_a_post_from_elsewhere_is_refused(
    aws: AwsStack, client: TestClient, headers: dict[str, str]
) -> None:
    response = client.post("/dashboard/queues/email/purge", headers=headers)
    assert response.status_code == 403


def test_a_same_origin_purge_empties_the_dlq(aws: AwsStack, client: TestClient) -> None:
    import boto3

    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=aws.environment["OFFLOAD_EMAIL_DLQ_URL"], MessageBody="{}")
    # The confirmation first (GET), then the POST from the dashboard's own page
    assert "Yes, purge email" in client.get("/dashboard/queues/email/purge").text
    response = client.post(
        "/dashboard/queues/email/purge", headers={"origin": BASE}, follow_redirects=False
    )
    assert response.status_code == 303
    assert "email: DLQ purged" in client.get(response.headers["location"]).text
    attributes = sqs.get_queue_attributes(
        QueueUrl=aws.environment["OFFLOAD_EMAIL_DLQ_URL"],
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"


def test_pages_forbid_framing_and_inline_script(client: TestClient) -> None:
    policy = client.get("/dashboard").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy
    assert client.get("/dashboard/queues/nope/purge").status_code == 404


def test_the_app_keeps_every_other_path(offload: Offload) -> None:
    seen: list[str] = []

    async def app(scope: dict[str, str], receive: object, send: object) -> None:
        seen.append(scope["path"])
        from starlette.responses import PlainTextResponse

        await PlainTextResponse("app")(scope, receive, send)  # type: ignore[arg-type]

    both = WithDashboard(app, dashboard(offload, task_log_url=None, moto_url=None))
    client = TestClient(both, base_url=BASE)
    assert client.get("/dashboards").text == "app"
    assert client.get("/tasks/x").text == "app"
    assert client.get("/dashboard").status_code == 200
    assert seen == ["/dashboards", "/tasks/x"]


def test_the_task_log_keeps_the_last_lines_of_the_last_tasks() -> None:
    log = TaskLog(max_tasks=2)
    first, second, third = (str(uuid4()) for _ in range(3))
    for n in range(MAX_LINES + 5):
        log.add({"task_id": first, "message": f"line {n}"}, "EmailWorker#0")
    assert not log.add({"message": "no task"}, "EmailWorker#0")
    lines = log.get(first)["lines"]
    assert len(lines) == MAX_LINES and lines[-1]["message"] == f"line {MAX_LINES + 4}"
    log.add({"task_id": second, "message": "x" * 100_000}, "w")
    assert len(json.dumps(log.get(second))) < 20_000  # one huge line is cut
    log.add({"task_id": third, "message": "y"}, "w")
    assert log.get(first)["lines"] == []  # the oldest task is let go
    # The poller's line for a received message gives the task's arguments
    body = json.dumps({"task_id": third, "kind": "k", "payload": {"to": "a@example.com"}})
    assert log.add({"offload_local_received": True, "queue": "q", "body": body}, "w")
    assert log.get(third)["message"]["body"]["payload"] == {"to": "a@example.com"}


def test_a_task_page_shows_its_log_lines(offload: Offload) -> None:
    log = TaskLog()
    task_id = uuid4()
    offload.tasks.create(task_id, "send_email")
    log.add({"task_id": str(task_id), "message": "task <started>", "level": "INFO"}, "w#0")
    server = serve(log)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        client = TestClient(dashboard(offload, task_log_url=url, moto_url=None), base_url=BASE)
        page = client.get(f"/dashboard/tasks/{task_id}").text
    finally:
        server.shutdown()
    assert "task &lt;started&gt;" in page
    assert client.get(f"/dashboard/tasks/{uuid4()}").status_code == 404
