"""The UploadWorker's logic: S3 notifications in, one `process_upload` task per object.

For each ObjectCreated record under `uploads/{upload_id}/`:
- the task moves to `running` (a task already finished is a duplicate delivery: skipped);
- the object is streamed through the cleaner into `results/{upload_id}/cleaned.csv` (multipart)
  and `results/{upload_id}/summary.json`; the task becomes `succeeded` with the summary;
- a file that can never succeed (empty, not text, over the limit, deleted) makes the task
  `failed` with the reason, and the record counts as handled: no retry, no DLQ;
- any other error (throttling, a timeout) is retried by the queue with backoff; the task is
  `retrying`, then `dead` when the message reaches the DLQ;
- a message that is not an S3 notification (poison) is copied to the UploadDeadLetterQueue at
  once with the reason and reported as processed; without OFFLOAD_UPLOAD_DLQ_URL it is failed,
  so that the queue's redrive policy moves it there after its receives.

Reprocessing an object writes the same results again, so a duplicate that slips past the state
check (two deliveries at once) still leaves exactly one result of each.
"""

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus
from uuid import UUID

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

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
from offload.uploads import pipeline
from offload.uploads.errors import InvalidUploadError, UploadTooLargeError
from offload.uploads.models import UPLOAD_KIND, parse_upload_key, result_keys


class InvalidUploadMessageError(InvalidMessageError):
    """An UploadQueue message that is not an S3 notification."""


# DynamoDB items hold at most 400 KB: a larger summary stays in summary.json only.
MAX_RESULT_CHARS = 200_000


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


def process_object(obj: ObjectCreated, attempt: int = 1) -> dict[str, Any] | None:
    """Handle one created object. Returns the task result, or None if there was nothing to do."""
    settings = get_settings()
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
        if not tasks_table.transition(upload_id, UPLOAD_KIND, TaskState.RUNNING, attempts=attempt):
            logger.info("upload already processed; duplicate delivery skipped")
            metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
            return None
        started = time.perf_counter()
        try:
            if obj.size is not None and obj.size > settings.upload_max_bytes:
                raise UploadTooLargeError(_too_large(obj.size, settings.upload_max_bytes))
            result = _process(obj.bucket, obj.key, upload_id, filename)
        except InvalidUploadError as exc:
            tasks_table.transition(
                upload_id, UPLOAD_KIND, TaskState.FAILED, attempts=attempt, error=str(exc)
            )
            logger.warning("upload cannot be processed; failed", extra={"reason": str(exc)})
            metrics.add_metric(name="UploadsFailed", unit=MetricUnit.Count, value=1)
            return None
        except Exception as exc:
            record_transient_failure(upload_id, UPLOAD_KIND, attempt, exc)
            logger.exception("upload processing failed; the queue will retry it")
            raise
        tasks_table.transition(
            upload_id, UPLOAD_KIND, TaskState.SUCCEEDED, attempts=attempt, result=result
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.info("upload processed", extra={"duration_ms": round(elapsed_ms, 1)})
        metrics.add_metric(name="UploadsProcessed", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="UploadDuration", unit=MetricUnit.Milliseconds, value=elapsed_ms)
        return result


def _too_large(size: int, limit: int) -> str:
    return f"the file is {size} bytes; the limit is {limit} bytes"


def _process(bucket: str, key: str, upload_id: UUID, filename: str) -> dict[str, Any]:
    settings = get_settings()
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
        summary = pipeline.process(
            source.body,
            writer,
            filename=filename,
            content_type=source.content_type,
            limits=limits,
        )
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        source.close()
    document = {"upload_id": str(upload_id), "filename": filename, **summary, "results": results}
    uploads_s3.put_json(bucket, results["summary_json"], document)
    return _task_result(document)


def _task_result(document: dict[str, Any]) -> dict[str, Any]:
    """The summary as the task's result, without its columns if it would not fit."""
    if len(json.dumps(document, default=str)) <= MAX_RESULT_CHARS:
        return document
    short = {k: v for k, v in document.items() if k != "columns"}
    short["columns_omitted"] = f"{len(document['columns'])} columns: see summary_json"
    return short


def process_objects(objects: list[ObjectCreated], attempt: int) -> list[dict[str, Any]]:
    """Every object of one notification; a transient error is raised after trying them all."""
    if not objects:
        logger.info("s3:TestEvent ignored")
    results: list[dict[str, Any]] = []
    errors: list[Exception] = []
    for obj in objects:
        try:
            result = process_object(obj, attempt)
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
        objects_done = process_objects(objects, attempt)
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


def handle_s3_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A direct S3 event (an async invoke): Lambda retries the event if this raises."""
    results = process_objects(s3_records(event), attempt=1)
    return {"processed": len(results)}
