"""The Lambda handler of one queue's worker: wiring from Lambda to the task lifecycle."""

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from offload.observability import logger, metrics, tracer
from offload.queues import QueueName
from offload.worker.runtime import process_event, process_record, register_context
from offload.worker.sources import Source, TaskMessages

LambdaHandler = Callable[
    [dict[str, Any], LambdaContext], PartialItemFailureResponse | dict[str, Any]
]


def sqs_handler(queue: QueueName, source: Source | None = None) -> LambdaHandler:
    """The Lambda handler of one queue's worker: `handler = sqs_handler("tasks")`.

    Each record of the SQS batch runs through the task lifecycle (offload.worker.runtime); the
    handler answers with partial batch failures (the function's SQS trigger needs
    `FunctionResponseTypes: [ReportBatchItemFailures]`). `source` reads the queue's messages:
    task messages by default, or S3 notifications (`source=s3_objects(task=...)`), whose direct
    events (as `sam local invoke` passes them) it runs too, answering `{"processed": n}`.
    """
    read = source or TaskMessages()
    # A batch whose every record failed is still a partial failure: Lambda's Errors metric
    # then counts crashes only, not ordinary retries.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
        process_record(record, queue, read, lambda_context)

    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
    def handler(
        event: dict[str, Any], context: LambdaContext
    ) -> PartialItemFailureResponse | dict[str, Any]:
        metrics.add_dimension(name="queue", value=queue)
        register_context(context)
        direct = read.direct_calls(event)
        if direct is not None:
            return process_event(direct, queue, context)
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler
