"""The Powertools idempotency stores, in the IdempotencyTable.

A persistence layer is configured by the first idempotent function that uses it, so the worker
(keyed on task ids) and the API (keyed on Idempotency-Key headers) each get their own.
"""

import time
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemNotFoundError

from offload.aws import clients
from offload.settings import get_settings


@cache
def _store(user: str) -> DynamoDBPersistenceLayer:
    # One instance per user: the first idempotent function to use a layer configures it.
    return DynamoDBPersistenceLayer(
        table_name=get_settings().idempotency_table, boto3_client=clients.dynamodb()
    )


def persistence_layer() -> DynamoDBPersistenceLayer:
    """The store of the workers' per-task records."""
    return _store("worker")


def api_persistence_layer() -> DynamoDBPersistenceLayer:
    """The store of the API's Idempotency-Key records."""
    return _store("api")


def reset() -> None:
    """Forget the stores (and the clients they hold)."""
    _store.cache_clear()


def in_progress_seconds_left(store: DynamoDBPersistenceLayer, data: dict[str, Any]) -> float:
    """Seconds until an in-progress record for `data` expires (0 if none or no expiry)."""
    try:
        record = store.get_record(data=data)
    except IdempotencyItemNotFoundError:
        return 0.0
    if record is None or record.in_progress_expiry_timestamp is None:
        return 0.0
    return max(0.0, record.in_progress_expiry_timestamp / 1000 - time.time())
