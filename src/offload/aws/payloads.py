"""Claim-check payloads in S3: task payloads too large for an SQS message."""

import json
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from offload.aws.errors import error_code, transient_errors
from offload.errors import EnqueueError, PermanentTaskError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PREFIX = "payloads/"


class PayloadMissingError(PermanentTaskError):
    """The message points at a payload object that does not exist (expired or deleted)."""


class PayloadPointerError(PermanentTaskError):
    """The message points anywhere but its own task's payload: never read."""


def _key(task_id: UUID) -> str:
    return f"{PREFIX}{task_id}.json"


class PayloadStore:
    """The payload bucket (`bucket`, "" if none) through `client`."""

    def __init__(self, client: "S3Client", bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def reference(self, task_id: UUID) -> str:
        """The one reference a message for `task_id` may carry: its key in the payload bucket."""
        return f"s3://{self.bucket}/{_key(task_id)}"

    def store(self, task_id: UUID, payload: dict[str, Any]) -> str:
        """Store a payload in the payload bucket; returns its s3:// reference."""
        if not self.bucket:
            raise EnqueueError(
                "the payload is too large for SQS and OFFLOAD_PAYLOAD_BUCKET is not set"
            )
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=_key(task_id),
                Body=json.dumps(payload, separators=(",", ":")).encode(),
                ContentType="application/json",
            )
        except (ClientError, BotoCoreError) as exc:
            raise EnqueueError(f"task {task_id}: large payload not stored: {exc}") from exc
        return self.reference(task_id)

    def load(self, task_id: UUID, pointer: str) -> dict[str, Any]:
        """Read the payload `store` kept for `task_id`; a pointer anywhere else is refused
        unread."""
        if not self.bucket or pointer != self.reference(task_id):
            raise PayloadPointerError(
                f"payload pointer {pointer[:200]!r} is not this task's payload "
                f"({self.reference(task_id)}); not read"
            )
        try:
            with transient_errors("S3 GetObject"):
                body = self.client.get_object(Bucket=self.bucket, Key=_key(task_id))["Body"].read()
        except ClientError as exc:
            if error_code(exc) in {"NoSuchKey", "NoSuchBucket", "404"}:
                raise PayloadMissingError(f"payload {pointer} does not exist") from exc
            raise
        payload: dict[str, Any] = json.loads(body)
        return payload
