"""The Lambda handler shared by the task workers: an SQS batch with partial batch failure."""

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
from offload.registry import QueueName
from offload.worker import process_record, register_context

LambdaHandler = Callable[[dict[str, Any], LambdaContext], PartialItemFailureResponse]


def task_queue_handler(queue: QueueName) -> LambdaHandler:
    """Build the handler for a worker that runs the registered tasks of one queue."""
    # A batch whose every record failed is still a partial failure: Lambda's Errors metric
    # then counts crashes only, not ordinary retries.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> Any:
        return process_record(record, queue, lambda_context)

    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        metrics.add_dimension(name="queue", value=queue)
        register_context(context)
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler
