"""Claim check: a task message too large for SQS carries a pointer to its payload in S3."""

from collections.abc import Callable

from offload.aws import sqs
from offload.aws.payloads import PayloadStore
from offload.models import TaskMessage


def check_in(
    message: TaskMessage, payloads: Callable[[], PayloadStore], max_message_bytes: int
) -> TaskMessage:
    """The message to send: itself if it fits in SQS, else a pointer to its payload, stored in
    `payloads()` (asked for only then: an API whose messages fit never builds an S3 client)."""
    if sqs.message_size(message) <= max_message_bytes:
        return message
    reference = payloads().store(message.task_id, message.payload)
    return message.model_copy(update={"payload": {}, "payload_ref": reference})


def check_out(message: TaskMessage, payloads: PayloadStore) -> TaskMessage:
    """The message with its payload, loaded from S3 if it was checked in there."""
    if message.payload_ref is None:
        return message
    payload = payloads.load(message.task_id, message.payload_ref)
    return message.model_copy(update={"payload": payload, "payload_ref": None})
