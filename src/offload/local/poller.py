"""A local SQS event source mapping: receive, invoke the handler, delete what succeeded.

One poller process stands for one Lambda instance. Visibility timeouts and the redrive to the
DLQ after maxReceiveCount are moto's own, exactly as SQS does them.
"""

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.logging.filters import SuppressFilter

from offload.local.emulator import Emulator, Runtime
from offload.local.lambda_runtime import Handler, LambdaContext, load_handler, sqs_event
from offload.local.stack import EventSource
from offload.local.task_log import MAX_LINE_CHARS, RECEIVED_KEY
from offload.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger("offload.local.poller")
WAIT_SECONDS = 1


@dataclass
class BatchOutcome:
    received: int
    failed: int


def failed_message_ids(response: Any, message_ids: list[str], report_failures: bool) -> set[str]:
    """Which messages Lambda would leave on the queue after this handler response."""
    if not report_failures:
        return set()
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures") or []
    ids = {str(item.get("itemIdentifier")) for item in failures if isinstance(item, dict)}
    if any(i not in message_ids for i in ids):
        # Lambda treats an unknown or empty identifier as a failure of the whole batch.
        return set(message_ids)
    return ids


class Poller:
    def __init__(
        self,
        source: EventSource,
        client: "SQSClient | None" = None,
        handler: Handler | None = None,
        on_receive: "Callable[[MessageTypeDef], None] | None" = None,
    ) -> None:
        self.source = source
        self.sqs = client or boto3.client("sqs")
        self.handler = handler or load_handler(source.handler)
        self.stopping = threading.Event()
        # Told of each message received, before the handler runs.
        self.on_receive: Callable[[MessageTypeDef], None] = on_receive or (lambda message: None)

    def poll_once(self, wait_seconds: int = WAIT_SECONDS) -> BatchOutcome:
        response = self.sqs.receive_message(
            QueueUrl=self.source.queue_url,
            MaxNumberOfMessages=min(self.source.batch_size, 10),
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return BatchOutcome(0, 0)
        for message in messages:
            self.on_receive(message)
        event = sqs_event(messages, self.source.queue_arn)
        context = LambdaContext(
            function_name=self.source.function,
            timeout_seconds=self.source.timeout,
            memory_limit_in_mb=self.source.memory,
        )
        ids = [m["MessageId"] for m in messages]
        try:
            result = self.handler(event, context)
            failed = failed_message_ids(result, ids, self.source.report_batch_item_failures)
        except Exception:
            log.exception("handler raised; the whole batch stays on the queue")
            failed = set(ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.source.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return BatchOutcome(len(messages), len(failed))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("poll failed; retrying in 1 s")
                self.stopping.wait(1)


class FunctionError(Exception):
    """The built function raised: Lambda leaves the whole batch on the queue."""


def emulated(emulator: Emulator) -> Handler:
    """A handler that invokes a built function's instance under the emulator."""

    def handler(event: dict[str, Any], context: Any) -> Any:
        result = emulator.invoke(json.dumps(event).encode())
        if result.error:
            raise FunctionError(result.payload.decode(errors="replace"))
        return result.json()

    return handler


def spec_argument(source: EventSource, built: dict[str, Any] | None = None) -> str:
    """The poller's argument: the event source, and the built function's instance to invoke
    (offload.local.emulator.Runtime.spec) instead of importing the handler."""
    return json.dumps({**asdict(source), "built": built})


def received_line(source: EventSource) -> "Callable[[MessageTypeDef], None]":
    """Prints a line for each message received, for the runner: the task's arguments, which the
    dashboard shows (offload.local.task_log)."""
    queue = source.queue_url.rsplit("/", 1)[-1]

    def report(message: "MessageTypeDef") -> None:
        body = message.get("Body", "")[:MAX_LINE_CHARS]
        print(json.dumps({RECEIVED_KEY: True, "queue": queue, "body": body}), flush=True)

    return report


def main(spec: str) -> None:
    """Entry point of one poller process: `python -m offload.local poll '<event source json>'`."""
    fields = json.loads(spec)
    built = fields.pop("built", None)
    source = EventSource(**fields)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    # The workers' Powertools Logger prints its own JSON lines, and its records also reach the
    # root logger: Powertools filters them out of the root's handlers that exist when it is
    # built, which in this process may be before basicConfig. Filter them here as well, or each
    # line is printed twice (the second plain, with its traceback).
    for handler in logging.getLogger().handlers:
        handler.addFilter(SuppressFilter(logger.name))
    report = received_line(source)
    if built is None:
        os.environ.update(source.environment)
        poller = Poller(source, on_receive=report)
    else:
        emulator = Runtime.from_spec(built, lambda line: print(line, flush=True))
        emulator.start()
        poller = Poller(source, handler=emulated(emulator), on_receive=report)
    signal.signal(signal.SIGTERM, lambda *_: poller.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: poller.stopping.set())
    try:
        poller.run()
    finally:
        if built is not None:
            emulator.stop()
