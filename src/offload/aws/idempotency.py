"""The Powertools idempotency store of the API's Idempotency-Key, in the IdempotencyTable.

Workers use none: a task's record in the TasksTable is both its status and its claim
(offload.aws.tasks_table). A persistence layer is configured by the first idempotent function
that uses it; each user gets its own.
"""

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

User = Literal["api"]


class IdempotencyStores:
    """The IdempotencyTable (`table`, "" if none) through `client`; its records live
    `ttl_seconds`. One persistence layer per user: the API's Idempotency-Key records."""

    def __init__(self, client: "DynamoDBClient", table: str, ttl_seconds: int) -> None:
        self.client = client
        self.table = table
        self.ttl_seconds = ttl_seconds
        self._layers: dict[str, DynamoDBPersistenceLayer] = {}
        self._lock = threading.Lock()

    def layer(self, user: User) -> DynamoDBPersistenceLayer:
        with self._lock:
            layer = self._layers.get(user)
            if layer is None:
                layer = DynamoDBPersistenceLayer(table_name=self.table, boto3_client=self.client)
                self._layers[user] = layer
            return layer

    def once(
        self,
        func: Callable[..., Any],
        *,
        user: User,
        data_keyword_argument: str,
        key_jmespath: str,
        key_prefix: str,
        validation_jmespath: str = "",
    ) -> tuple[IdempotencyConfig, Callable[..., Any]]:
        """Wrap func in Powertools idempotency on the user's store.

        Returns the config too, so each invocation can register its Lambda context with it.
        """
        config = IdempotencyConfig(
            event_key_jmespath=key_jmespath,
            payload_validation_jmespath=validation_jmespath,
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self.ttl_seconds,
        )
        wrapped: Callable[..., Any] = idempotent_function(
            data_keyword_argument=data_keyword_argument,
            persistence_store=self.layer(user),
            config=config,
            key_prefix=key_prefix,
        )(func)
        return config, wrapped
