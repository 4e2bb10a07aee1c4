"""The local system's embedded AWS applies a conditional write atomically, as DynamoDB does.

Two workers that receive the same task at once both try to claim its record (TasksTable.claim,
a conditional UpdateItem); exactly one may win, or both send the email. moto reads the item,
evaluates the condition, then writes: a thread switch between the read and the write let both
claims pass (a duplicate email in the fault-injection suite). The test holds every claim inside
that window, so that without the fix both claims pass every time.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import boto3
import pytest

from offload.aws.tasks_table import TasksTable
from offload.local.runner import MotoServer
from tests.support import REGION

HOLD_SECONDS = 0.3  # how long each claim stays between moto's read and its write


@pytest.fixture
def moto_url(env: None) -> Iterator[str]:
    """The runner's embedded AWS on a free port (port 0), outside any mock_aws."""
    server = MotoServer("127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.server.server_port}"
    finally:
        server.stop()


@pytest.fixture
def claims_held_in_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every claim pauses after moto read the item, before it checks the condition: the thread
    switch that made two claims pass, made certain."""
    from moto.dynamodb import comparisons

    evaluate = comparisons.get_filter_expression

    def slow(expression: Any, names: Any, values: Any, *args: Any, **kwargs: Any) -> Any:
        if names and "#lease_expires_at" in names:
            time.sleep(HOLD_SECONDS)
        return evaluate(expression, names, values, *args, **kwargs)

    # moto's table module imported it by name: replace it there
    monkeypatch.setattr("moto.dynamodb.models.table.get_filter_expression", slow)


def _table(moto_url: str, name: str) -> TasksTable:
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url)
    return TasksTable(client, name, ttl_days=1, max_receive_count=12)


def test_two_concurrent_claims_of_one_task_let_exactly_one_worker_run_it(
    moto_url: str, claims_held_in_the_window: None
) -> None:
    # Given the tasks table in the embedded AWS, and two workers with their own clients
    name = f"tasks-{uuid4().hex[:8]}"
    boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url).create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "task_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "task_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    workers = [_table(moto_url, name), _table(moto_url, name)]
    task_id = uuid4()
    start = threading.Barrier(len(workers))
    outcomes: list[str] = []

    def claim(table: TasksTable) -> None:
        start.wait()
        taken = table.claim(task_id, "send_email", attempts=1, lease_seconds=30)
        outcomes.append("claimed" if taken.taken else "held by the other worker")

    # When both claim the same task at the same moment
    threads = [threading.Thread(target=claim, args=(table,)) for table in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    # Then exactly one runs it; the other sees it held
    assert sorted(outcomes) == ["claimed", "held by the other worker"]
