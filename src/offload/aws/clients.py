"""Lazily created boto3 clients, reused across Lambda invocations."""

import threading
from collections.abc import Callable
from functools import update_wrapper
from typing import TYPE_CHECKING, Generic, TypeVar

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")
# boto3's default session is not thread-safe, and a client takes tens of ms of CPU to build.
_BUILD_LOCK = threading.Lock()


class _once(Generic[T]):  # noqa: N801 - used as a decorator, like functools.cache
    """functools.cache for a client factory, except that concurrent first callers (a burst on
    a cold process) wait for one client instead of each building their own."""

    def __init__(self, factory: Callable[[], T]) -> None:
        update_wrapper(self, factory)
        self._factory = factory
        self._value: T | None = None

    def __call__(self) -> T:
        value = self._value
        if value is None:
            with _BUILD_LOCK:
                if self._value is None:
                    self._value = self._factory()
                value = self._value
        return value

    def cache_clear(self) -> None:
        self._value = None


# Standard retry mode retries throttling and 5xx with backoff before our code sees an error.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10
)


@_once
def sqs() -> "SQSClient":
    return boto3.client("sqs", config=_CONFIG)


@_once
def dynamodb() -> "DynamoDBClient":
    return boto3.client("dynamodb", config=_CONFIG)


@_once
def ses() -> "SESV2Client":
    return boto3.client("sesv2", config=_CONFIG)


@_once
def s3() -> "S3Client":
    return boto3.client("s3", config=_CONFIG)


@_once
def s3_signer() -> "S3Client":
    """Signs presigned URLs and POST policies with SigV4, which S3 requires of them."""
    return boto3.client("s3", config=_CONFIG.merge(Config(signature_version="s3v4")))


def reset() -> None:
    """Forget every client, so the next call builds one for the current environment."""
    for factory in (sqs, dynamodb, ses, s3, s3_signer):
        factory.cache_clear()
    from offload.aws import idempotency

    idempotency.reset()
