"""Task messages on SQS."""

from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from offload.aws import clients
from offload.models import TaskMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

SQS_BATCH_LIMIT = 10


def _attributes(message: TaskMessage) -> "dict[str, MessageAttributeValueTypeDef]":
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "task_id": {"DataType": "String", "StringValue": str(message.task_id)},
        "kind": {"DataType": "String", "StringValue": message.kind},
    }
    if message.correlation_id:
        attributes["correlation_id"] = {
            "DataType": "String",
            "StringValue": message.correlation_id,
        }
    return attributes


def send_messages(queue_url: str, messages: Sequence[TaskMessage]) -> dict[UUID, str]:
    """Send task messages in batches of ten. Returns the messages SQS did not take, with why."""
    refused: dict[UUID, str] = {}
    for start in range(0, len(messages), SQS_BATCH_LIMIT):
        chunk = messages[start : start + SQS_BATCH_LIMIT]
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "MessageBody": message.model_dump_json(),
                "MessageAttributes": _attributes(message),
            }
            for index, message in enumerate(chunk)
        ]
        try:
            response = clients.sqs().send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            refused.update({message.task_id: str(exc) for message in chunk})
            continue
        for failed in response.get("Failed", []):
            message = chunk[int(failed["Id"])]
            refused[message.task_id] = f"{failed['Code']}: {failed.get('Message', '')}"
    return refused


def send_raw(
    queue_url: str, body: str, attributes: "dict[str, MessageAttributeValueTypeDef]"
) -> None:
    clients.sqs().send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes)


def delete(queue_url: str, receipt_handle: str) -> None:
    clients.sqs().delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)


def change_visibility(queue_url: str, receipt_handle: str, seconds: int) -> None:
    clients.sqs().change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
    )
