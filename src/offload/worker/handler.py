"""The Lambda handler of one queue's worker: wiring from Lambda to the task lifecycle.

The handler composes its Offload (offload.wiring.build: settings from the environment, clients)
at its first invocation, never at import, and keeps it for the life of the process.
"""

import threading
from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from offload.observability import logger, metrics, tracer
from offload.queues import QueueName
from offload.wiring import Offload, build
from offload.worker.batch import ConcurrentBatchProcessor
from offload.worker.runtime import Runtime, process_event, process_record
from offload.worker.sources import Source, TaskMessages


class QueueWorker:
    """The Lambda handler of one queue's worker (see sqs_handler)."""

    def __init__(self, queue: QueueName, source: Source, offload: Offload | None = None) -> None:
        self.queue = queue
        self.source = source
        self._offload = offload
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self._handler = self._wrap()

    def using(self, offload: Offload) -> "QueueWorker":
        """This queue's worker, with its source, on `offload` instead of its own."""
        return QueueWorker(self.queue, self.source, offload)

    @property
    def offload(self) -> Offload | None:
        """What it runs on, if it was given one; None: it composes its own at its first
        invocation."""
        return self._offload

    @offload.setter
    def offload(self, offload: Offload | None) -> None:
        with self._lock:
            self._offload, self._runtime = offload, None

    @property
    def runtime(self) -> Runtime:
        """The lifecycle's dependencies: composed at the first invocation, then kept."""
        runtime = self._runtime
        if runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = Runtime(self._offload or build())
                runtime = self._runtime
        return runtime

    def __call__(
        self, event: dict[str, Any], context: LambdaContext
    ) -> PartialItemFailureResponse | dict[str, Any]:
        response: PartialItemFailureResponse | dict[str, Any] = self._handler(event, context)
        return response

    def _wrap(self) -> Any:
        queue, read = self.queue, self.source

        @logger.inject_lambda_context(clear_state=True)
        @metrics.log_metrics
        @tracer.capture_lambda_handler(capture_response=False)
        def handler(
            event: dict[str, Any], context: LambdaContext
        ) -> PartialItemFailureResponse | dict[str, Any]:
            runtime = self.runtime
            metrics.add_dimension(name="queue", value=queue)
            runtime.register_context(context)
            direct = read.direct_calls(event, runtime.settings)
            if direct is not None:
                return process_event(direct, queue, context, runtime)

            def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
                process_record(record, queue, read, lambda_context, runtime)

            return process_partial_response(
                event=event,
                record_handler=record_handler,
                processor=ConcurrentBatchProcessor(runtime.settings.record_concurrency),
                context=context,
            )

        return handler


def sqs_handler(
    queue: QueueName, source: Source | None = None, *, offload: Offload | None = None
) -> QueueWorker:
    """The Lambda handler of one queue's worker: `handler = sqs_handler("tasks")`.

    Each record of the SQS batch runs through the task lifecycle (offload.worker.runtime), up
    to OFFLOAD_RECORD_CONCURRENCY records at a time (offload.worker.batch); the handler answers
    with partial batch failures (the function's SQS trigger needs
    `FunctionResponseTypes: [ReportBatchItemFailures]`). `source` reads the queue's messages:
    task messages by default, or S3 notifications (`source=s3_objects(task=...)`), whose direct
    events (as `sam local invoke` passes them) it runs too, answering `{"processed": n}`.
    `offload` is what it runs on; by default it composes its own (offload.wiring.build) at its
    first invocation. `handler.using(offload)` is the same worker on another one (tests).
    """
    return QueueWorker(queue, source or TaskMessages(), offload)
