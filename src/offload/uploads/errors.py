"""Why an upload can never succeed. The worker marks such a task `failed` at once, with the
message as its error, and does not retry it."""


class InvalidUploadError(Exception):
    """The uploaded file can never be processed; the message says why, for the user."""


class EmptyUploadError(InvalidUploadError):
    """No bytes, or nothing but blank lines."""


class NotTextError(InvalidUploadError):
    """Binary content, an unknown encoding, or a broken gzip stream."""


class UploadTooLargeError(InvalidUploadError):
    """Over the size limit, compressed or once decompressed."""


class UploadMissingError(InvalidUploadError):
    """The object was deleted before the worker could read it."""
