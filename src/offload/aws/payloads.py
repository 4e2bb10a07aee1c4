"""Claim-check payloads in S3: task payloads too large for an SQS message."""

import json
from typing import Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from offload.aws import clients
from offload.aws.errors import error_code, transient_errors
from offload.errors import EnqueueError, PermanentTaskError
from offload.settings import get_settings

PREFIX = "payloads/"


class PayloadMissingError(PermanentTaskError):
    """The message points at a payload object that does not exist (expired or deleted)."""


class PayloadPointerError(PermanentTaskError):
    """The message points anywhere but its own task's payload: never read."""


def _key(task_id: UUID) -> str:
    return f"{PREFIX}{task_id}.json"


def reference(task_id: UUID) -> str:
    """The one reference a message for `task_id` may carry: its key in the payload bucket."""
    return f"s3://{get_settings().payload_bucket}/{_key(task_id)}"


def store(task_id: UUID, payload: dict[str, Any]) -> str:
    """Store a payload in the payload bucket; returns its s3:// reference."""
    bucket = get_settings().payload_bucket
    if not bucket:
        raise EnqueueError("the payload is too large for SQS and OFFLOAD_PAYLOAD_BUCKET is not set")
    key = _key(task_id)
    try:
        clients.s3().put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(payload, separators=(",", ":")).encode(),
            ContentType="application/json",
        )
    except (ClientError, BotoCoreError) as exc:
        raise EnqueueError(f"task {task_id}: large payload not stored: {exc}") from exc
    return reference(task_id)


def load(task_id: UUID, pointer: str) -> dict[str, Any]:
    """Read the payload `store` kept for `task_id`; a pointer anywhere else is refused unread."""
    if not get_settings().payload_bucket or pointer != reference(task_id):
        raise PayloadPointerError(
            f"payload pointer {pointer[:200]!r} is not this task's payload "
            f"({reference(task_id)}); not read"
        )
    bucket, key = get_settings().payload_bucket, _key(task_id)
    try:
        with transient_errors("S3 GetObject"):
            body = clients.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if error_code(exc) in {"NoSuchKey", "NoSuchBucket", "404"}:
            raise PayloadMissingError(f"payload {pointer} does not exist") from exc
        raise
    payload: dict[str, Any] = json.loads(body)
    return payload
