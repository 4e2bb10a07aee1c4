"""Why an upload can never succeed. Each is an UnprocessableInputError: the worker marks the
task `failed` at once, with the message as its error, and does not retry it."""

from offload.errors import UnprocessableInputError


class InvalidUploadError(UnprocessableInputError):
    """The uploaded file can never be processed; the message says why, for the user."""


class EmptyUploadError(InvalidUploadError):
    """No bytes, or nothing but blank lines."""


class NotTextError(InvalidUploadError):
    """Binary content, an unknown encoding, or a broken gzip stream."""


class UploadTooLargeError(InvalidUploadError):
    """Over the size limit, compressed or once decompressed."""


class UploadMissingError(InvalidUploadError):
    """The object was deleted before the worker could read it."""


class RecordTooLargeError(UploadTooLargeError):
    """One CSV record (a line, or a quoted record over several lines) over the record limit."""


class TooManyColumnsError(InvalidUploadError):
    """A header or a row with more columns than the column limit."""


class OutOfTimeError(UploadTooLargeError):
    """The file would not be processed before the function's timeout."""


class UploadProcessingError(InvalidUploadError):
    """The pipeline raised an error it does not know over this file: the same file would fail
    the same way on every delivery, so the upload fails at once (and the log has the trace)."""
