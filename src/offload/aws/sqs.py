"""Task messages on SQS."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import BotoCoreError, ClientError

from offload.models import TaskMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageTypeDef,
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


def attributes_size(attributes: "Mapping[str, Any]") -> int:
    """Bytes that message attributes count towards SQS's message size limit."""
    return sum(
        len(name) + len(value["DataType"]) + len(value.get("StringValue", "").encode())
        for name, value in attributes.items()
    )


def message_size(message: TaskMessage) -> int:
    """The size SQS counts for a task message: its body and its attributes."""
    return len(message.model_dump_json().encode()) + attributes_size(_attributes(message))


def _chunks(
    entries: "list[SendMessageBatchRequestEntryTypeDef]", limit: int
) -> "Iterator[list[SendMessageBatchRequestEntryTypeDef]]":
    """Batches of at most ten entries whose total size stays within one message's limit."""
    chunk: list[SendMessageBatchRequestEntryTypeDef] = []
    size = 0
    for entry in entries:
        entry_size = len(entry["MessageBody"].encode()) + attributes_size(
            entry.get("MessageAttributes", {})
        )
        if chunk and (len(chunk) == SQS_BATCH_LIMIT or size + entry_size > limit):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        yield chunk


def _batches(messages: "Sequence[MessageTypeDef]") -> "Iterator[Sequence[MessageTypeDef]]":
    """The messages in runs of at most ten, the most one SQS batch call takes."""
    for start in range(0, len(messages), SQS_BATCH_LIMIT):
        yield messages[start : start + SQS_BATCH_LIMIT]


class Sqs:
    """SQS through `client` (`long_poll_client()` for receives that wait, built when first
    asked: an API that only sends never builds it); batches stay within `max_message_bytes`,
    the queues' MaximumMessageSize."""

    def __init__(
        self,
        client: "SQSClient",
        long_poll_client: Callable[[], "SQSClient"],
        max_message_bytes: int,
    ) -> None:
        self.client = client
        self.long_poll_client = long_poll_client
        self.max_message_bytes = max_message_bytes

    def send_messages(
        self,
        queue_url: str,
        messages: Sequence[TaskMessage],
        delays: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, str]:
        """Send task messages in batches (ten at most, and within SQS's batch size), each
        delayed by its `delays` seconds (0 to 900) if it has one.

        Returns the messages SQS did not take, with why.
        """
        refused: dict[UUID, str] = {}
        by_id = {str(index): message for index, message in enumerate(messages)}
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for entry_id, message in by_id.items():
            entry: SendMessageBatchRequestEntryTypeDef = {
                "Id": entry_id,
                "MessageBody": message.model_dump_json(),
                "MessageAttributes": _attributes(message),
            }
            delay = (delays or {}).get(message.task_id)
            if delay:
                entry["DelaySeconds"] = delay
            entries.append(entry)
        for chunk in _chunks(entries, self.max_message_bytes):
            try:
                response = self.client.send_message_batch(QueueUrl=queue_url, Entries=chunk)
            except (ClientError, BotoCoreError) as exc:
                refused.update({by_id[entry["Id"]].task_id: str(exc) for entry in chunk})
                continue
            for failed in response.get("Failed", []):
                message = by_id[failed["Id"]]
                refused[message.task_id] = f"{failed['Code']}: {failed.get('Message', '')}"
        return refused

    def send_raw(
        self, queue_url: str, body: str, attributes: "dict[str, MessageAttributeValueTypeDef]"
    ) -> None:
        self.client.send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes)

    def change_visibility(self, queue_url: str, receipt_handle: str, seconds: int) -> str | None:
        """Show a received message again in `seconds`. Returns why SQS refused, or None.

        A refusal (a stale receipt handle, a network error) is not fatal to the caller: the message
        still comes back, after the queue's own visibility timeout.
        """
        try:
            self.client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (ClientError, BotoCoreError) as exc:
            return str(exc)
        return None

    def receive(
        self,
        queue_url: str,
        *,
        max_messages: int = 10,
        visibility_seconds: int = 60,
        wait_seconds: int = 0,
    ) -> "list[MessageTypeDef]":
        """Receive up to ten messages with all their attributes.

        With wait_seconds it is a long poll: SQS asks all of its servers and answers as soon as a
        message is there, so an empty answer means none was visible. A short poll (0) asks a
        sample of them and may answer empty while messages wait.
        """
        client = self.long_poll_client() if wait_seconds > 0 else self.client
        response = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(max_messages, SQS_BATCH_LIMIT),
            VisibilityTimeout=visibility_seconds,
            WaitTimeSeconds=min(max(wait_seconds, 0), 20),
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def move(self, source_url: str, target_url: str, messages: "Sequence[MessageTypeDef]") -> int:
        """Copy received messages to another queue, then delete them from their own. Returns moved.

        A message whose copy SQS refused (or whose batch failed) stays where it is: it reappears
        after its visibility timeout. The copy drops the `error` attribute that the worker added on
        dead-lettering.
        """
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(index),
                "MessageBody": message["Body"],
                "MessageAttributes": {
                    name: value
                    for name, value in message.get("MessageAttributes", {}).items()
                    if name != "error" and value["DataType"].startswith(("String", "Number"))
                },
            }
            for index, message in enumerate(messages)
        ]
        moved = 0
        for chunk in _chunks(entries, self.max_message_bytes):
            try:
                response = self.client.send_message_batch(QueueUrl=target_url, Entries=chunk)
            except (ClientError, BotoCoreError):
                continue
            sent = [messages[int(ok["Id"])] for ok in response.get("Successful", [])]
            if sent:
                self.delete_batch(source_url, sent)
            moved += len(sent)
        return moved

    def delete_batch(self, queue_url: str, messages: "Sequence[MessageTypeDef]") -> None:
        for chunk in _batches(messages):
            self.client.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )

    def release(self, queue_url: str, messages: "Sequence[MessageTypeDef]") -> None:
        """Make received messages visible again at once."""
        for chunk in _batches(messages):
            self.client.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )

    def queue_arn(self, queue_url: str) -> str:
        attributes = self.client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]
        return attributes["QueueArn"]

    def counts(self, queue_url: str) -> dict[str, int]:
        """Approximate numbers of visible, in-flight and delayed messages."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return {str(name): int(value) for name, value in attributes.items()}

    def purge(self, queue_url: str) -> None:
        self.client.purge_queue(QueueUrl=queue_url)
