"""Sources: how one queue's messages become task calls for the worker runtime.

- TaskMessages (the default): each message is one Offload task message, as `add_task` and
  enqueue send it.
- S3Objects (`s3_objects(task=...)`): each message is an S3 event notification. Each
  ObjectCreated record of an object in the configured bucket (OFFLOAD_UPLOAD_BUCKET unless
  given) whose key follows the convention `uploads/<task id>/<name>` (offload.object_keys)
  becomes one call of `task` with the arguments `bucket`, `key` and `size` (bytes, or None),
  under the task id of its key.
  Keys are URL-decoded first (`+` is a space, `%2F` a slash). Ignored, each with a log line:
  S3's `s3:TestEvent`, an event for another bucket (the log names it), an event that is not
  ObjectCreated, a key outside the convention. The object's key is the call's origin: the first
  object to claim a task id is the only one that ever runs it (see TasksTable.claim).
  A direct S3 event (an asynchronous invoke, as `sam local invoke` passes it) is read too.

A source raises InvalidMessageError for a body it can never read: a poison message.
"""

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus
from uuid import UUID

from pydantic import ValidationError

from offload.errors import InvalidMessageError
from offload.models import TaskMessage
from offload.object_keys import UPLOADS_PREFIX, parse_object_key
from offload.observability import logger
from offload.registry import TaskDefinition, definition_of
from offload.settings import Settings


@dataclass(frozen=True)
class Call:
    """One task call read from a message: the task message to run, and where it came from."""

    message: TaskMessage
    # What the call was built from (an S3 object's key) when that is not a task message: the
    # first origin to claim a task is the only one that may ever run it.
    origin: str | None = None


class Source(Protocol):
    def calls(self, body: str, settings: Settings) -> list[Call]:
        """The task calls of one SQS message body; InvalidMessageError if it can never be
        read."""
        ...

    def direct_calls(self, event: Mapping[str, Any], settings: Settings) -> list[Call] | None:
        """The task calls of an event that is not an SQS batch, or None if this source does not
        read such events."""
        ...


def parse_message(body: str) -> TaskMessage:
    try:
        return TaskMessage.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidMessageError(f"not a valid task message: {exc}") from exc


class TaskMessages:
    """Each message is one task message."""

    def calls(self, body: str, settings: Settings) -> list[Call]:
        return [Call(parse_message(body))]

    def direct_calls(self, event: Mapping[str, Any], settings: Settings) -> list[Call] | None:
        return None


# ---------------------------------------------------------------- S3 event notifications
@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    size: int | None
    event_name: str


def s3_records(notification: Mapping[str, Any]) -> list[ObjectCreated]:
    """Every record of an S3 notification, keys URL-decoded (`+` is a space, `%2F` a slash).

    S3's `s3:TestEvent` (sent when the notification is configured) has no records: [].
    ValueError, KeyError or TypeError if it is not an S3 notification.
    """
    if notification.get("Event") == "s3:TestEvent":
        return []
    records = notification.get("Records")
    if not isinstance(records, list):
        raise ValueError("not an S3 notification: no Records")
    found = []
    for record in records:
        s3 = record["s3"]
        size = s3["object"].get("size")
        found.append(
            ObjectCreated(
                bucket=s3["bucket"]["name"],
                key=unquote_plus(s3["object"]["key"]),
                size=int(size) if size is not None else None,
                event_name=str(record.get("eventName", "")),
            )
        )
    return found


def _notification(body: str) -> list[ObjectCreated]:
    """The records of an S3 notification in an SQS message body; InvalidMessageError if the
    body is not one. Only the parsing is guarded: nothing that runs later is swallowed."""
    try:
        notification = json.loads(body)
        if not isinstance(notification, dict):
            raise ValueError("the body is not a JSON object")
        return s3_records(notification)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidMessageError(f"not an S3 notification: {exc!r}") from exc


def s3_task_ids(body: str, prefix: str = UPLOADS_PREFIX) -> list[UUID]:
    """The task ids that an S3 notification (an SQS message body) names by the key convention;
    [] if the body is not an S3 notification."""
    try:
        objects = _notification(body)
    except InvalidMessageError:
        return []
    return [parsed[0] for obj in objects if (parsed := parse_object_key(obj.key, prefix))]


def is_s3_event(event: Mapping[str, Any]) -> bool:
    """A direct S3 notification (an asynchronous invoke), not an SQS batch."""
    records = event.get("Records")
    return bool(records) and isinstance(records, list) and records[0].get("eventSource") == "aws:s3"


class S3Objects:
    """Each S3 ObjectCreated record becomes a call of one task (see the module's docstring)."""

    def __init__(self, task: TaskDefinition, bucket: str | None, prefix: str) -> None:
        self.task = task
        self.bucket = bucket
        self.prefix = prefix

    def calls(self, body: str, settings: Settings) -> list[Call]:
        return self._calls(_notification(body), settings)

    def direct_calls(self, event: Mapping[str, Any], settings: Settings) -> list[Call] | None:
        return self._calls(s3_records(event), settings) if is_s3_event(event) else None

    def _calls(self, objects: list[ObjectCreated], settings: Settings) -> list[Call]:
        if not objects:
            logger.info("s3:TestEvent ignored")
        bucket = self.bucket or settings.upload_bucket
        calls = []
        for obj in objects:
            if obj.bucket != bucket:
                logger.warning(
                    "event for another bucket; ignored",
                    extra={"bucket": obj.bucket, "key": obj.key, "configured_bucket": bucket},
                )
                continue
            if not obj.event_name.startswith("ObjectCreated:"):
                logger.info(
                    "not an ObjectCreated event; ignored", extra={"event_name": obj.event_name}
                )
                continue
            parsed = parse_object_key(obj.key, self.prefix)
            if parsed is None:
                logger.warning(
                    "object key outside the key convention; ignored",
                    extra={"key": obj.key, "convention": f"{self.prefix}<task id>/<name>"},
                )
                continue
            payload = self.task.payload(bucket=obj.bucket, key=obj.key, size=obj.size)
            message = TaskMessage(task_id=parsed[0], kind=self.task.name, payload=payload)
            calls.append(Call(message, origin=obj.key))
        return calls


def s3_objects(
    task: Callable[..., Any], *, bucket: str | None = None, prefix: str = UPLOADS_PREFIX
) -> S3Objects:
    """The source of a queue that S3 notifies: each created object `<prefix><task id>/<name>`
    in `bucket` (default OFFLOAD_UPLOAD_BUCKET) becomes the call
    `task(bucket=..., key=..., size=...)` with that task id.

        handler = sqs_handler("uploads", source=s3_objects(task=process_upload))
    """
    definition = definition_of(task)
    try:
        inspect.signature(task).bind(bucket="", key="", size=None)
    except TypeError as exc:
        raise TypeError(
            f"{definition.name!r} cannot take an S3 object: it must accept bucket, key and size"
        ) from exc
    return S3Objects(definition, bucket, prefix)
