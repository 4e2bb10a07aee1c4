"""Translate botocore errors into the domain's transient or permanent errors."""

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    HTTPClientError,
    NoRegionError,
)

from offload.errors import TransientTaskError

TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
}


def unreachable(error: BaseException) -> str | None:
    """Why AWS (or the local system's moto) cannot be reached at all, for a command line."""
    if isinstance(error, EndpointConnectionError):
        return f"nothing answers at {error.kwargs.get('endpoint_url')}"
    if isinstance(error, NoRegionError):
        return "no AWS region is set (AWS_DEFAULT_REGION)"
    return None


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_transient(error: ClientError) -> bool:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return error_code(error) in TRANSIENT_CODES or status >= 500


@contextmanager
def transient_errors(action: str) -> Iterator[None]:
    """Re-raise throttling, 5xx and network failures as TransientTaskError."""
    try:
        yield
    except ClientError as exc:
        if is_transient(exc):
            raise TransientTaskError(f"{action}: {error_code(exc)}: {exc}") from exc
        raise
    except (ConnectionError, HTTPClientError) as exc:
        raise TransientTaskError(f"{action}: {exc}") from exc
