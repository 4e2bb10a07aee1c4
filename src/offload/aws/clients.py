"""Lazily created boto3 clients, reused across Lambda invocations."""

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient

# Standard retry mode retries throttling and 5xx with backoff before our code sees an error.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10
)


@cache
def sqs() -> "SQSClient":
    return boto3.client("sqs", config=_CONFIG)


@cache
def dynamodb() -> "DynamoDBClient":
    return boto3.client("dynamodb", config=_CONFIG)


@cache
def ses() -> "SESV2Client":
    return boto3.client("sesv2", config=_CONFIG)


@cache
def s3() -> "S3Client":
    return boto3.client("s3", config=_CONFIG)


def reset() -> None:
    """Forget every client, so the next call builds one for the current environment."""
    for factory in (sqs, dynamodb, ses, s3):
        factory.cache_clear()
    from offload.aws import idempotency

    idempotency.persistence_layer.cache_clear()
