"""UploadWorker: UploadQueue (S3 ObjectCreated notifications) → cleaned CSV and summary in S3.

Also accepts a direct S3 event, as `sam local invoke` passes it.
"""

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from example_app.uploads import service
from offload.observability import logger, metrics, tracer

# A batch whose every record failed is still a partial failure: Lambda's Errors metric
# then counts crashes only, not ordinary retries.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> int:
    return service.handle_sqs_record(record, lambda_context)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(
    event: dict[str, Any], context: LambdaContext
) -> PartialItemFailureResponse | dict[str, Any]:
    metrics.add_dimension(name="queue", value="uploads")
    if service.is_s3_event(event):
        return service.handle_s3_event(event, context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
