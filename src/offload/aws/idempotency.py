"""The Powertools idempotency store, in the IdempotencyTable."""

from functools import cache

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from offload.aws import clients
from offload.settings import get_settings


@cache
def persistence_layer() -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(
        table_name=get_settings().idempotency_table, boto3_client=clients.dynamodb()
    )
