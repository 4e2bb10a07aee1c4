"""The process_upload task: one uploaded file in, a cleaned CSV and a summary out.

The UploadWorker (`workers/upload.py`) calls it once per object created under
`uploads/<upload id>/<filename>` in the upload bucket, with the upload id as its task id, and
runs it through the task lifecycle like any other task (offload.worker). What it decides:

- the object is streamed through the cleaner into `results/<upload id>/cleaned.csv`
  (multipart) and `results/<upload id>/summary.json`; the summary is the task's result;
- a file that can never succeed raises an InvalidUploadError (the task is `failed` with the
  reason, no retry, no DLQ): empty, not text, deleted, over a limit (size, expanded size,
  record size, columns), too large to process before the function's timeout, or any error the
  pipeline raises over the file that is not an error of S3 (a bug that this file triggers fails
  the same way on every delivery; the log has the traceback);
- an error of S3 (throttling, a timeout, a broken connection, while reading or writing) is
  transient: the queue retries it.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from example_app.uploads import pipeline
from example_app.uploads.csvclean import Readable
from example_app.uploads.errors import (
    InvalidUploadError,
    UploadMissingError,
    UploadProcessingError,
    UploadTooLargeError,
)
from example_app.uploads.models import UPLOAD_KIND, result_keys
from example_app.uploads.pipeline import Sink
from offload import deadline, task
from offload.aws import uploads_s3
from offload.errors import TransientTaskError
from offload.object_keys import parse_object_key
from offload.observability import logger
from offload.wiring import current
from offload.worker import MAX_RESULT_BYTES


class StorageError(TransientTaskError):
    """Reading the upload from S3 or writing its results failed: the queue retries."""


@task(name=UPLOAD_KIND, queue="uploads")
def process_upload(bucket: str, key: str, size: int | None = None) -> dict[str, Any]:
    """Clean and summarise the file at `key` (`uploads/<upload id>/<filename>`) in `bucket`;
    `size` is the size S3's notification gives, if any."""
    settings = current().settings
    parsed = parse_object_key(key)
    if parsed is None:
        raise InvalidUploadError(f"not an upload's key: {key!r}")
    upload_id, filename = parsed
    if size is not None and size > settings.upload_max_bytes:
        raise UploadTooLargeError(_too_large(size, settings.upload_max_bytes))
    # Stop in time to record the outcome before the function's timeout.
    stop_by = deadline.stop_by(settings.record_time_budget_ms / 1000)
    return _process(bucket, key, upload_id, filename, stop_by)


def _too_large(size: int, limit: int) -> str:
    return f"the file is {size} bytes; the limit is {limit} bytes"


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Any error of `action` is S3's (StorageError, transient), not the file's."""
    try:
        yield
    except TransientTaskError:
        raise
    except Exception as exc:
        raise StorageError(f"S3 {action}: {type(exc).__name__}: {exc}") from exc


class _GuardedBody:
    """The S3 body, its errors S3's."""

    def __init__(self, body: Readable) -> None:
        self._body = body

    def read(self, size: int = -1, /) -> bytes:
        with _storage_errors("read"):
            return self._body.read(size)


class _GuardedSink:
    """The results writer, its errors S3's."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, data: bytes, /) -> Any:
        with _storage_errors("write"):
            return self._sink.write(data)


def _process(
    bucket: str, key: str, upload_id: UUID, filename: str, stop_by: float | None
) -> dict[str, Any]:
    offload = current()
    settings, s3 = offload.settings, offload.clients.s3
    try:
        source = uploads_s3.open_object(s3, bucket, key)
    except uploads_s3.ObjectMissingError as exc:
        raise UploadMissingError(
            "the uploaded file was deleted before it could be processed"
        ) from exc
    if source.size > settings.upload_max_bytes:
        source.close()
        raise UploadTooLargeError(_too_large(source.size, settings.upload_max_bytes))
    results = result_keys(upload_id)
    writer = uploads_s3.MultipartWriter(
        s3, bucket, results["cleaned_csv"], "text/csv; charset=utf-8"
    )
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
                deadline=stop_by,
            )
        except (InvalidUploadError, TransientTaskError):
            raise
        except Exception as exc:
            logger.exception("upload processing raised an unexpected error; failed")
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
    uploads_s3.put_json(s3, bucket, results["summary_json"], document)
    return _task_result(document)


def _abort(writer: uploads_s3.MultipartWriter) -> None:
    """Discard the parts written; a failed abort is logged, never raised over the real error
    (S3's lifecycle rule removes incomplete multipart uploads)."""
    try:
        writer.abort()
    except Exception:
        logger.warning("aborting the multipart upload failed", exc_info=True)


def _task_result(document: dict[str, Any]) -> dict[str, Any]:
    """The summary as the task's result, without its columns if it would be too large to keep
    (offload.worker.MAX_RESULT_BYTES); summary.json always has them."""
    if len(json.dumps(document, default=str).encode()) <= MAX_RESULT_BYTES:
        return document
    short = {k: v for k, v in document.items() if k != "columns"}
    short["columns_omitted"] = f"{len(document['columns'])} columns: see summary_json"
    return short
