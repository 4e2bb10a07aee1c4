"""Transient failures: the task becomes `retrying` (or `dead` on its last receive), and its
message comes back after an exponential backoff with jitter. Permanent ones: the message is
copied to the DLQ at once (dead_letter)."""

import random
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from offload.aws.sqs import Sqs
from offload.models import TaskState
from offload.observability import logger
from offload.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef


def backoff_bounds(attempt: int, settings: Settings) -> tuple[int, int]:
    """The shortest and longest backoff after receive `attempt`: an exponential ceiling from
    OFFLOAD_RETRY_BASE_SECONDS, capped at OFFLOAD_RETRY_MAX_SECONDS, with equal jitter (the
    delay is drawn between half the ceiling and the ceiling)."""
    # The exponent is capped: 2 ** 1024 no longer converts to float (a queue with no redrive).
    growth = 2 ** min(max(attempt - 1, 0), 64)
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * growth)
    return int(ceiling / 2), int(ceiling)


def backoff_seconds(attempt: int, settings: Settings) -> int:
    """Exponential backoff from the receive count, capped, with equal jitter."""
    low, high = backoff_bounds(attempt, settings)
    return random.randint(low, high)  # noqa: S311 - jitter, not crypto


def transient_outcome(settings: Settings, attempt: int) -> tuple[TaskState, int]:
    """What a transient failure on receive `attempt` makes of the task, and the seconds its
    message should stay hidden.

    On the queue's last receive the task is `dead` and the delay is 0, so that SQS moves the
    message to the DLQ at once rather than after the visibility timeout.
    """
    if attempt >= settings.max_receive_count:
        return TaskState.DEAD, 0
    return TaskState.RETRYING, backoff_seconds(attempt, settings)


def show_again_in(sqs: Sqs, queue_url: str, receipt_handle: str, seconds: int) -> None:
    """Set when a received message comes back; if SQS refuses, it comes back anyway later."""
    refused = sqs.change_visibility(queue_url, receipt_handle, seconds)
    if refused is not None:
        logger.warning(
            "message visibility not changed; it returns after the queue's visibility timeout",
            extra={"reason": refused, "wanted_seconds": seconds},
        )


def dead_letter(sqs: Sqs, record: SQSRecord, dlq_url: str, reason: str) -> None:
    """Copy the message to a DLQ with the reason (attribute `error`); the caller then reports
    the record as processed, so that Lambda deletes the original."""
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        name: {"DataType": value.data_type, "StringValue": value.string_value or ""}
        for name, value in record.message_attributes.items()
        if value.data_type.startswith(("String", "Number")) and name != "error"
    }
    attributes["error"] = {"DataType": "String", "StringValue": reason[:1000]}
    sqs.send_raw(dlq_url, record.body, attributes)
