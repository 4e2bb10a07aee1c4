"""Lazily created boto3 clients, reused across Lambda invocations."""

import threading
from collections.abc import Callable
from functools import update_wrapper
from typing import TYPE_CHECKING, Generic, TypeVar

import boto3
from botocore.config import Config

from offload.settings import (
    AWS_CONNECT_TIMEOUT_SECONDS,
    AWS_MAX_ATTEMPTS,
    AWS_READ_TIMEOUT_SECONDS,
    get_settings,
)

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


# DynamoDB and SQS calls are idempotent or conditional: standard retry mode retries throttling,
# 5xx and timeouts with backoff before our code sees an error. Worst case of one call:
# settings.aws_call_worst_seconds() (12 s). The read timeout is too short for SQS long polls:
# those use sqs_long_poll().
RETRIED = Config(
    retries={"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS},
    connect_timeout=AWS_CONNECT_TIMEOUT_SECONDS,
    read_timeout=AWS_READ_TIMEOUT_SECONDS,
)
# S3 moves parts of up to hundreds of MB: longer timeouts, outside the per-record budget.
_S3 = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)


@_once
def sqs() -> "SQSClient":
    return boto3.client("sqs", config=RETRIED)


@_once
def sqs_long_poll() -> "SQSClient":
    """For receives that wait (operator tools, outside any record's time budget): SQS holds
    the answer up to 20 s, so the read timeout must be longer."""
    return boto3.client("sqs", config=RETRIED.merge(Config(read_timeout=25)))


@_once
def dynamodb() -> "DynamoDBClient":
    return boto3.client("dynamodb", config=RETRIED)


def ses_config() -> Config:
    """One attempt per call: SendEmail has no idempotency token, so an SDK retry after a 5xx or
    a read timeout could send the email again. The queue retries it, after a backoff."""
    settings = get_settings()
    return Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=settings.ses_connect_timeout_seconds,
        read_timeout=settings.ses_read_timeout_seconds,
    )


@_once
def ses() -> "SESV2Client":
    return boto3.client("sesv2", config=ses_config())


@_once
def s3() -> "S3Client":
    return boto3.client("s3", config=_S3)


@_once
def s3_signer() -> "S3Client":
    """Signs presigned URLs and POST policies with SigV4, which S3 requires of them."""
    return boto3.client("s3", config=_S3.merge(Config(signature_version="s3v4")))


def reset() -> None:
    """Forget every client, so the next call builds one for the current environment."""
    for factory in (sqs, sqs_long_poll, dynamodb, ses, s3, s3_signer):
        factory.cache_clear()
