"""The Powertools idempotency stores, in the IdempotencyTable.

A persistence layer is configured by the first idempotent function that uses it, so the worker
(keyed on task ids) and the API (keyed on Idempotency-Key headers) each get their own.
"""

import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyItemNotFoundError

from offload.aws import clients
from offload.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@cache
def _store(user: str, client: "DynamoDBClient", table: str) -> DynamoDBPersistenceLayer:
    # One instance per user (the first idempotent function to use a layer configures it), per
    # client and table: a new client (clients.reset() in tests) gets a new store.
    return DynamoDBPersistenceLayer(table_name=table, boto3_client=client)


def persistence_layer() -> DynamoDBPersistenceLayer:
    """The store of the workers' per-task records."""
    return _store("worker", clients.dynamodb(), get_settings().idempotency_table)


def api_persistence_layer() -> DynamoDBPersistenceLayer:
    """The store of the API's Idempotency-Key records."""
    return _store("api", clients.dynamodb(), get_settings().idempotency_table)


def once(
    func: Callable[..., Any],
    *,
    store: DynamoDBPersistenceLayer,
    data_keyword_argument: str,
    key_jmespath: str,
    key_prefix: str,
    validation_jmespath: str = "",
) -> tuple[IdempotencyConfig, Callable[..., Any]]:
    """Wrap func in Powertools idempotency on `store`; records live OFFLOAD_IDEMPOTENCY_TTL_SECONDS.

    Returns the config too, so each invocation can register its Lambda context with it.
    """
    config = IdempotencyConfig(
        event_key_jmespath=key_jmespath,
        payload_validation_jmespath=validation_jmespath,
        raise_on_no_idempotency_key=True,
        expires_after_seconds=get_settings().idempotency_ttl_seconds,
    )
    wrapped: Callable[..., Any] = idempotent_function(
        data_keyword_argument=data_keyword_argument,
        persistence_store=store,
        config=config,
        key_prefix=key_prefix,
    )(func)
    return config, wrapped


def in_progress_seconds_left(store: DynamoDBPersistenceLayer, data: dict[str, Any]) -> float:
    """Seconds until an in-progress record for `data` expires (0 if none or no expiry)."""
    try:
        record = store.get_record(data=data)
    except IdempotencyItemNotFoundError:
        return 0.0
    if record is None or record.in_progress_expiry_timestamp is None:
        return 0.0
    # Powertools reads the expiry from DynamoDB as a Decimal (milliseconds).
    return max(0.0, float(record.in_progress_expiry_timestamp) / 1000 - time.time())
