"""The upload bucket: presigned POST in, streamed reads, streamed multipart writes out."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from offload.aws.errors import error_code, transient_errors
from offload.errors import UnprocessableInputError
from offload.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

# S3 takes parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 of them.
PART_BYTES = 8 * 1024 * 1024
MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


class ObjectMissingError(UnprocessableInputError):
    """The object was deleted before it could be read."""


def presigned_post(
    client: "S3Client", bucket: str, key: str, *, content_type: str, size: int, expires_in: int
) -> dict[str, Any]:
    """URL and form fields for a browser or curl to POST one file of `size` bytes to `key`.

    The policy pins the key (exactly: never a prefix), the Content-Type and the size (exactly
    the declared one); S3 refuses anything else. It stays valid until it expires, so a second
    POST of the same form overwrites the same key with a file of the same size and type.
    """
    if "${filename}" in key:
        # boto3 would turn the key condition into a prefix ("starts-with").
        raise ValueError(f"an upload key must be exact, not a template: {key!r}")
    fields = {"Content-Type": content_type}
    conditions: list[Any] = [
        {"Content-Type": content_type},
        ["content-length-range", size, size],
    ]
    post: dict[str, Any] = client.generate_presigned_post(
        Bucket=bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=expires_in
    )
    return post


def presigned_get(
    client: "S3Client", bucket: str, key: str, *, expires_in: int, filename: str
) -> str:
    url: str = client.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket,
            "Key": key,
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
        },
        ExpiresIn=expires_in,
    )
    return url


class S3Object:
    """An object opened for streaming: its body is read on demand, never all at once."""

    def __init__(self, response: Any) -> None:
        self.body: IO[bytes] = response["Body"]
        self.size: int = int(response.get("ContentLength", 0))
        self.content_type: str | None = response.get("ContentType")
        self.etag: str = str(response.get("ETag", "")).strip('"')

    def close(self) -> None:
        self.body.close()


def open_object(client: "S3Client", bucket: str, key: str) -> S3Object:
    """GET an object for streaming. ObjectMissingError if it no longer exists."""
    try:
        with transient_errors("S3 GetObject"):
            return S3Object(client.get_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if error_code(exc) in MISSING_CODES:
            raise ObjectMissingError(f"s3://{bucket}/{key} no longer exists") from exc
        raise


class MultipartWriter:
    """Streams bytes to one S3 object in parts; nothing is visible until `close()` completes.

    Small outputs (under one part) are written with a single PutObject. On error, `abort()`
    discards the parts already uploaded.
    """

    def __init__(
        self,
        client: "S3Client",
        bucket: str,
        key: str,
        content_type: str,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.content_type = content_type
        self.part_bytes = part_bytes
        self.buffer = bytearray()
        self.parts: list[CompletedPartTypeDef] = []
        self.upload_id: str | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.size += len(data)
        if len(self.buffer) >= self.part_bytes:
            self._flush()

    def _flush(self) -> None:
        s3 = self.client
        with transient_errors("S3 UploadPart"):
            if self.upload_id is None:
                self.upload_id = s3.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self.content_type
                )["UploadId"]
            number = len(self.parts) + 1
            response = s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=bytes(self.buffer),
            )
        self.parts.append({"ETag": response["ETag"], "PartNumber": number})
        self.buffer.clear()

    def close(self) -> None:
        s3 = self.client
        if self.upload_id is None:
            with transient_errors("S3 PutObject"):
                s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=bytes(self.buffer),
                    ContentType=self.content_type,
                )
            self.buffer.clear()
            return
        if self.buffer:
            self._flush()
        with transient_errors("S3 CompleteMultipartUpload"):
            s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )

    def abort(self) -> None:
        """Discard the parts uploaded so far. Called while another error propagates, so it never
        raises: a failed abort (NoSuchUpload after a complete whose answer was lost, a network
        error) is logged, and the bucket's lifecycle rule expires the parts."""
        upload_id, self.upload_id = self.upload_id, None
        self.buffer.clear()
        if upload_id is None:
            return
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "multipart upload not aborted; S3 expires its parts",
                extra={"key": self.key, "upload_id": upload_id, "reason": str(exc)},
            )


def put_json(client: "S3Client", bucket: str, key: str, data: Any) -> None:
    with transient_errors("S3 PutObject"):
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(data, indent=2, default=str).encode(),
            ContentType="application/json",
        )


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


def list_objects(
    client: "S3Client", bucket: str, prefix: str = "", limit: int = 1000
) -> list[ObjectInfo]:
    """The first `limit` objects of `bucket` under `prefix` (in key order)."""
    found: list[ObjectInfo] = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"MaxItems": limit}
    )
    for page in pages:
        found.extend(
            ObjectInfo(o["Key"], int(o.get("Size", 0)), o["LastModified"])
            for o in page.get("Contents", [])
        )
    return found[:limit]
