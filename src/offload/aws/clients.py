"""The boto3 clients of one composition (offload.wiring.build), each built on first use.

There is no module-level client: whoever composes Offload (a worker's handler at its first
invocation, the API at its first request, a test) holds one Clients, and passes it down.
"""

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
from botocore.config import Config

from offload.settings import (
    AWS_CONNECT_TIMEOUT_SECONDS,
    AWS_MAX_ATTEMPTS,
    AWS_READ_TIMEOUT_SECONDS,
    Settings,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")
# boto3's default session is not thread-safe, and a client takes tens of ms of CPU to build.
_BUILD_LOCK = threading.Lock()

# DynamoDB and SQS calls are idempotent or conditional: standard retry mode retries throttling,
# 5xx and timeouts with backoff before our code sees an error. Worst case of one call:
# settings.aws_call_worst_seconds() (12 s). The read timeout is too short for SQS long polls:
# those use sqs_long_poll.
RETRIED = Config(
    retries={"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS},
    connect_timeout=AWS_CONNECT_TIMEOUT_SECONDS,
    read_timeout=AWS_READ_TIMEOUT_SECONDS,
)
# No client-side parameter check on the hot paths' clients: SQS (the API's one call per
# request), DynamoDB (the worker's claim and outcome) and SES (SendEmail). Their parameters are
# built in offload.aws from validated task messages and arguments, and the service checks them
# again; botocore's check of each one cost about 3% of an enqueue request's CPU and about 13% of
# a worker's CPU per record (its UpdateItems' nested attribute values). A refusal is the same
# either way (a ClientError instead of a BotoCoreError).
_UNCHECKED = Config(parameter_validation=False)
_SQS = RETRIED.merge(_UNCHECKED)
_DYNAMODB = RETRIED.merge(_UNCHECKED)
# S3 moves parts of up to hundreds of MB: longer timeouts, outside the per-record budget.
_S3 = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)


def ses_config(settings: Settings) -> Config:
    """One attempt per call: SendEmail has no idempotency token, so an SDK retry after a 5xx or
    a read timeout could send the email again. The queue retries it, after a backoff."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=settings.ses_connect_timeout_seconds,
        read_timeout=settings.ses_read_timeout_seconds,
    ).merge(_UNCHECKED)


class Clients:
    """One client per service, built on first use from the environment of that moment (region,
    credentials, endpoint); concurrent first callers (a burst on a cold process) wait for one
    client instead of each building their own."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._built: dict[str, Any] = {}

    def _get(self, name: str, build: Callable[[], T]) -> T:
        client = self._built.get(name)
        if client is None:
            with _BUILD_LOCK:
                client = self._built.get(name)
                if client is None:
                    client = self._built[name] = build()
        return cast("T", client)

    def _pooled(self, config: Config) -> Config:
        """`config`, with a connection for each record that may run at once (a batch's
        records run in threads of their own: offload.worker.batch)."""
        connections = max(10, self._settings.record_concurrency)
        return config.merge(Config(max_pool_connections=connections))

    @property
    def sqs(self) -> "SQSClient":
        return self._get("sqs", lambda: boto3.client("sqs", config=self._pooled(_SQS)))

    @property
    def sqs_long_poll(self) -> "SQSClient":
        """For receives that wait (operator tools, outside any record's time budget): SQS holds
        the answer up to 20 s, so the read timeout must be longer."""
        config = RETRIED.merge(Config(read_timeout=25))
        return self._get("sqs_long_poll", lambda: boto3.client("sqs", config=config))

    @property
    def dynamodb(self) -> "DynamoDBClient":
        return self._get(
            "dynamodb", lambda: boto3.client("dynamodb", config=self._pooled(_DYNAMODB))
        )

    @property
    def ses(self) -> "SESV2Client":
        return self._get(
            "ses", lambda: boto3.client("sesv2", config=self._pooled(ses_config(self._settings)))
        )

    @property
    def scheduler(self) -> "EventBridgeSchedulerClient":
        return self._get("scheduler", lambda: boto3.client("scheduler", config=RETRIED))

    @property
    def s3(self) -> "S3Client":
        return self._get("s3", lambda: boto3.client("s3", config=self._pooled(_S3)))

    @property
    def s3_signer(self) -> "S3Client":
        """Signs presigned URLs and POST policies with SigV4, which S3 requires of them."""
        config = _S3.merge(Config(signature_version="s3v4"))
        return self._get("s3_signer", lambda: boto3.client("s3", config=config))
