"""The local system's embedded AWS applies a conditional write atomically, as DynamoDB does.

Two workers that receive the same task at once both try to claim its idempotency record
(Powertools' conditional PutItem); exactly one may win, or both send the email. moto reads the
item, evaluates the condition, then writes: a thread switch between the read and the write let
both claims pass (a duplicate email in the fault-injection suite). The test holds every claim
inside that window, so that without the fix both claims pass every time.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
)

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
    """Every idempotency claim pauses after moto read the item, before it checks the condition:
    the thread switch that made two claims pass, made certain."""
    from moto.dynamodb import comparisons

    evaluate = comparisons.get_filter_expression

    def slow(expression: Any, names: Any, values: Any, *args: Any, **kwargs: Any) -> Any:
        if names and "#in_progress_expiry" in names:
            time.sleep(HOLD_SECONDS)
        return evaluate(expression, names, values, *args, **kwargs)

    # moto's table module imported it by name: replace it there
    monkeypatch.setattr("moto.dynamodb.models.table.get_filter_expression", slow)


def _store(moto_url: str, table: str) -> DynamoDBPersistenceLayer:
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url)
    store = DynamoDBPersistenceLayer(table_name=table, boto3_client=client)
    store.configure(IdempotencyConfig(event_key_jmespath="task_id"), key_prefix="offload-task")
    return store


def test_two_concurrent_claims_of_one_task_let_exactly_one_worker_run_it(
    moto_url: str, claims_held_in_the_window: None
) -> None:
    # Given the idempotency table in the embedded AWS, and two workers with their own clients
    table = f"idempotency-{uuid4().hex[:8]}"
    boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    workers = [_store(moto_url, table), _store(moto_url, table)]
    task = {"task_id": str(uuid4()), "kind": "send_email", "payload": {}}
    start = threading.Barrier(len(workers))
    outcomes: list[str] = []

    def claim(store: DynamoDBPersistenceLayer) -> None:
        start.wait()
        try:
            store.save_inprogress(data=task, remaining_time_in_millis=30_000)
            outcomes.append("claimed")
        except IdempotencyItemAlreadyExistsError:
            outcomes.append("held by the other worker")

    # When both claim the same task at the same moment
    threads = [threading.Thread(target=claim, args=(store,)) for store in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    # Then exactly one runs it; the other sees it in progress
    assert sorted(outcomes) == ["claimed", "held by the other worker"]
