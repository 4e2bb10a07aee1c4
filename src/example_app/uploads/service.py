"""The UploadWorker's logic: S3 notifications in, one `process_upload` task per object.

For each ObjectCreated record under `uploads/{upload_id}/`:
- an event for a bucket other than OFFLOAD_UPLOAD_BUCKET is ignored (logged with its name):
  the worker reads and writes only its own bucket;
- the upload is claimed (tasks_table.claim): it moves to `running` for this invocation until
  its Lambda's timeout. A finished upload is a duplicate delivery: skipped. An upload another
  invocation is running comes back when that one ends. The first object to claim an upload id
  is the only one that ever runs it: a second object for the same id is ignored (logged);
- the object is streamed through the cleaner into `results/{upload_id}/cleaned.csv` (multipart)
  and `results/{upload_id}/summary.json`; the task becomes `succeeded` with the summary;
- a file that can never succeed makes the task `failed` with the reason, and the record counts
  as handled: no retry, no DLQ. That is: empty, not text, deleted, over a limit (size, expanded
  size, record size, columns), too large to process before the function's timeout, or any
  error the pipeline raises over the file that is not an error of S3 (a bug that this file
  triggers fails the same way on every delivery; the log has the traceback);
- an error of S3 or DynamoDB (throttling, a timeout, a broken connection, while reading,
  writing or recording) is retried by the queue with backoff; the task is `retrying`, then
  `dead` when the message reaches the DLQ;
- a message that is not an S3 notification (poison) is copied to the UploadDeadLetterQueue at
  once with the reason and reported as processed; without OFFLOAD_UPLOAD_DLQ_URL it is failed,
  so that the queue's redrive policy moves it there after its receives.
"""

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus
from uuid import UUID

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from example_app.uploads import pipeline
from example_app.uploads.csvclean import Readable
from example_app.uploads.errors import (
    InvalidUploadError,
    UploadProcessingError,
    UploadTooLargeError,
)
from example_app.uploads.models import UPLOAD_KIND, parse_upload_key, result_keys
from example_app.uploads.pipeline import Sink
from offload.aws import tasks_table, uploads_s3
from offload.errors import InvalidMessageError, TransientTaskError
from offload.models import TaskState
from offload.observability import logger, metrics
from offload.retries import (
    backoff_seconds,
    dead_letter,
    record_transient_failure,
    show_again_in,
)
from offload.settings import get_settings


class InvalidUploadMessageError(InvalidMessageError):
    """An UploadQueue message that is not an S3 notification."""


class StorageError(TransientTaskError):
    """Reading the upload from S3 or writing its results failed: the queue retries."""


class UploadHeldError(TransientTaskError):
    """Another invocation is running this upload; look again when its lease ends."""

    def __init__(self, seconds_left: float) -> None:
        super().__init__(f"another invocation runs this upload for {seconds_left:.0f} s more")
        self.seconds_left = seconds_left


# DynamoDB items hold at most 400 KB: a larger summary stays in summary.json only.
MAX_RESULT_CHARS = 200_000
# Without a Lambda context (a direct call), an upload is held for Lambda's longest timeout.
MAX_LAMBDA_SECONDS = 900
# The most SQS allows for a message's visibility timeout (12 hours).
MAX_VISIBILITY_SECONDS = 43_200


@dataclass(frozen=True)
class Invocation:
    """What one invocation may spend on an upload: who it is, and until when."""

    holder: str = field(default_factory=lambda: str(uuid.uuid4()))
    # time.monotonic() by which processing must stop (None: no deadline)
    deadline: float | None = None
    # how long a claim holds: until the function's timeout
    lease_seconds: float = MAX_LAMBDA_SECONDS

    @classmethod
    def of(cls, context: LambdaContext) -> "Invocation":
        left = context.get_remaining_time_in_millis() / 1000
        margin = get_settings().record_time_budget_ms / 1000
        return cls(
            holder=context.aws_request_id,
            deadline=time.monotonic() + max(0.0, left - margin),
            lease_seconds=left,
        )


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    size: int | None
    event_name: str


def is_s3_event(event: Mapping[str, Any]) -> bool:
    """A direct S3 notification (as `sam local invoke` passes), not an SQS batch."""
    records = event.get("Records")
    return bool(records) and isinstance(records, list) and records[0].get("eventSource") == "aws:s3"


def s3_records(notification: Mapping[str, Any]) -> list[ObjectCreated]:
    """Every record of an S3 notification, keys URL-decoded (`+` is a space, `%2F` a slash).

    S3's `s3:TestEvent` (sent when the notification is configured) has no records: [].
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


def process_object(
    obj: ObjectCreated, attempt: int = 1, invocation: Invocation | None = None
) -> dict[str, Any] | None:
    """Handle one created object. Returns the task result, or None if there was nothing to do."""
    settings = get_settings()
    invocation = invocation or Invocation()
    if obj.bucket != settings.upload_bucket:
        logger.warning(
            "event for another bucket; ignored",
            extra={"bucket": obj.bucket, "key": obj.key, "upload_bucket": settings.upload_bucket},
        )
        return None
    if not obj.event_name.startswith("ObjectCreated:"):
        logger.info("not an ObjectCreated event; ignored", extra={"event_name": obj.event_name})
        return None
    parsed = parse_upload_key(obj.key)
    if parsed is None:
        logger.warning("object outside uploads/{upload_id}/; ignored", extra={"key": obj.key})
        return None
    upload_id, filename = parsed
    keys = {"task_id": str(upload_id), "kind": UPLOAD_KIND, "attempt": attempt, "key": obj.key}
    with logger.append_context_keys(**keys):
        if not _claim(upload_id, obj.key, attempt, invocation):
            return None
        started = time.perf_counter()
        try:
            if obj.size is not None and obj.size > settings.upload_max_bytes:
                raise UploadTooLargeError(_too_large(obj.size, settings.upload_max_bytes))
            result = _process(obj.key, upload_id, filename, invocation.deadline)
            tasks_table.transition(
                upload_id, UPLOAD_KIND, TaskState.SUCCEEDED, attempts=attempt, result=result
            )
        except InvalidUploadError as exc:
            tasks_table.transition(
                upload_id, UPLOAD_KIND, TaskState.FAILED, attempts=attempt, error=str(exc)
            )
            if isinstance(exc, UploadProcessingError):
                logger.exception("upload processing raised an unexpected error; failed")
            else:
                logger.warning("upload cannot be processed; failed", extra={"reason": str(exc)})
            metrics.add_metric(name="UploadsFailed", unit=MetricUnit.Count, value=1)
            return None
        except Exception as exc:
            # The task leaves `running` (retrying, or dead): the claim ends with it.
            record_transient_failure(upload_id, UPLOAD_KIND, attempt, exc)
            logger.exception("upload processing failed; the queue will retry it")
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.info("upload processed", extra={"duration_ms": round(elapsed_ms, 1)})
        metrics.add_metric(name="UploadsProcessed", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="UploadDuration", unit=MetricUnit.Milliseconds, value=elapsed_ms)
        return result


def _claim(upload_id: UUID, key: str, attempt: int, invocation: Invocation) -> bool:
    """Whether this invocation runs the upload now; UploadHeldError if another one does."""
    claim = tasks_table.claim(
        upload_id,
        UPLOAD_KIND,
        key=key,
        holder=invocation.holder,
        seconds=invocation.lease_seconds,
        attempts=attempt,
    )
    if claim.taken:
        return True
    if claim.finished:
        logger.info("upload already processed; duplicate delivery skipped")
        metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
    elif claim.other_key is not None:
        logger.warning(
            "a second object for this upload; ignored",
            extra={"upload_key": claim.other_key},
        )
        metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
    else:
        raise UploadHeldError(claim.seconds_left)
    return False


def _too_large(size: int, limit: int) -> str:
    return f"the file is {size} bytes; the limit is {limit} bytes"


class _GuardedBody:
    """The S3 body: any error while reading it is S3's (StorageError), not the file's."""

    def __init__(self, body: Readable) -> None:
        self._body = body

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._body.read(size)
        except TransientTaskError:
            raise
        except Exception as exc:
            raise StorageError(f"S3 read: {type(exc).__name__}: {exc}") from exc


class _GuardedSink:
    """The results writer: any error while writing is S3's (StorageError), not the file's."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, data: bytes, /) -> Any:
        try:
            return self._sink.write(data)
        except TransientTaskError:
            raise
        except Exception as exc:
            raise StorageError(f"S3 write: {type(exc).__name__}: {exc}") from exc


def _process(key: str, upload_id: UUID, filename: str, deadline: float | None) -> dict[str, Any]:
    settings = get_settings()
    bucket = settings.upload_bucket
    source = uploads_s3.open_object(bucket, key)
    if source.size > settings.upload_max_bytes:
        source.close()
        raise UploadTooLargeError(_too_large(source.size, settings.upload_max_bytes))
    results = result_keys(upload_id)
    writer = uploads_s3.MultipartWriter(bucket, results["cleaned_csv"], "text/csv; charset=utf-8")
    limits = pipeline.Limits(
        max_bytes=settings.upload_max_bytes,
        max_expanded_bytes=settings.upload_max_expanded_bytes,
        max_tracked_rows=settings.upload_max_tracked_rows,
    )
    try:
        try:
            summary = pipeline.process(
                _GuardedBody(source.body),
                _GuardedSink(writer),
                filename=filename,
                content_type=source.content_type,
                limits=limits,
                deadline=deadline,
            )
        except (InvalidUploadError, TransientTaskError):
            raise
        except Exception as exc:
            raise UploadProcessingError(
                f"the file could not be processed: {type(exc).__name__}: {exc}"
            ) from exc
        writer.close()
    except BaseException:
        _abort(writer)
        raise
    finally:
        source.close()
    document = {"upload_id": str(upload_id), "filename": filename, **summary, "results": results}
    uploads_s3.put_json(bucket, results["summary_json"], document)
    return _task_result(document)


def _abort(writer: uploads_s3.MultipartWriter) -> None:
    """Discard the parts written; a failed abort is logged, never raised over the real error
    (S3's lifecycle rule removes incomplete multipart uploads)."""
    try:
        writer.abort()
    except Exception:
        logger.warning("aborting the multipart upload failed", exc_info=True)


def _task_result(document: dict[str, Any]) -> dict[str, Any]:
    """The summary as the task's result, without its columns if it would not fit."""
    if len(json.dumps(document, default=str)) <= MAX_RESULT_CHARS:
        return document
    short = {k: v for k, v in document.items() if k != "columns"}
    short["columns_omitted"] = f"{len(document['columns'])} columns: see summary_json"
    return short


def process_objects(
    objects: list[ObjectCreated], attempt: int, invocation: Invocation | None = None
) -> list[dict[str, Any]]:
    """Every object of one notification; a transient error is raised after trying them all."""
    if not objects:
        logger.info("s3:TestEvent ignored")
    invocation = invocation or Invocation()
    results: list[dict[str, Any]] = []
    errors: list[Exception] = []
    for obj in objects:
        try:
            result = process_object(obj, attempt, invocation)
        except Exception as exc:  # the other records still run; re-raised below
            errors.append(exc)
            continue
        if result is not None:
            results.append(result)
    if errors:
        raise errors[0]
    return results


def handle_sqs_record(record: SQSRecord, context: LambdaContext) -> int:
    """One SQS message from the UploadQueue. Returns how many uploads it completed."""
    settings = get_settings()
    attempt = int(record.attributes.approximate_receive_count)
    if context.get_remaining_time_in_millis() < settings.record_time_budget_ms:
        show_again_in(settings.upload_queue_url, record.receipt_handle, 0)
        raise TransientTaskError("too close to the Lambda timeout; returned to the queue")
    try:
        notification = json.loads(record.body)
        if not isinstance(notification, dict):
            raise ValueError("the body is not a JSON object")
        objects = s3_records(notification)
    except (ValueError, KeyError, TypeError) as exc:
        # Not an S3 notification: no task to tell, and retrying cannot help. Only the parsing
        # is guarded here: an error while processing must not drop the message.
        _poison(record, f"not an S3 notification: {exc!r}")
        return 0
    try:
        objects_done = process_objects(objects, attempt, Invocation.of(context))
    except UploadHeldError as exc:
        # The task is untouched: it is running elsewhere. Look again once that run has ended.
        delay = min(int(exc.seconds_left) + 1, MAX_VISIBILITY_SECONDS)
        logger.warning(
            "upload held by another delivery; returned to the queue",
            extra={"message_id": record.message_id, "retry_in_seconds": delay},
        )
        if settings.upload_queue_url:
            show_again_in(settings.upload_queue_url, record.receipt_handle, delay)
        raise
    except Exception:
        if settings.upload_queue_url:
            # The tasks are already retrying (or dead): the message comes back after the backoff.
            delay = 0 if attempt >= settings.max_receive_count else backoff_seconds(attempt)
            show_again_in(settings.upload_queue_url, record.receipt_handle, delay)
        raise
    return len(objects_done)


def _poison(record: SQSRecord, reason: str) -> None:
    """Dead-letter a message that can never be processed, with the reason."""
    dlq_url = get_settings().upload_dlq_url
    keys = {"message_id": record.message_id, "reason": reason}
    if not dlq_url:
        logger.error("poison message; no OFFLOAD_UPLOAD_DLQ_URL, so it is failed", extra=keys)
        raise InvalidUploadMessageError(reason)
    dead_letter(record, dlq_url, reason)
    logger.error("poison message sent to the DLQ", extra=keys)
    metrics.add_metric(name="UploadMessagesDeadLettered", unit=MetricUnit.Count, value=1)


def handle_s3_event(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A direct S3 event (an async invoke): Lambda retries the event if this raises."""
    results = process_objects(s3_records(event), attempt=1, invocation=Invocation.of(context))
    return {"processed": len(results)}
