"""Run one SQS task record: the logic behind every worker handler.

Outcomes for a record:
- success: the task is `succeeded`; the record is reported as processed and deleted.
- permanent error (bad message, unknown task, invalid arguments, SES rejection): the message
  is copied to the DLQ at once and reported as processed; the task is `dead`.
- any other error: the record is reported as failed and comes back after a backoff; the task is
  `retrying`, or `dead` once the queue's maxReceiveCount is reached (SQS then moves it).
- a duplicate of a finished task: skipped (its status is final), or, if it races the first
  delivery, held back by the idempotency record until that delivery ends or expires.
- the Lambda is near its timeout: the record goes back to the queue untouched, after the same
  backoff as a transient failure (the receive counted).
"""

import json
import math
import time
from collections.abc import Callable
from contextlib import suppress
from functools import cache
from typing import Any
from uuid import UUID

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from offload import claim_check, deadline
from offload.aws import idempotency, tasks_table
from offload.errors import (
    InvalidMessageError,
    PermanentTaskError,
    TransientTaskError,
    UnknownTaskError,
)
from offload.models import TaskMessage, TaskState
from offload.observability import logger, metrics, tracer
from offload.registry import QueueName, get_task
from offload.retries import (
    backoff_seconds,
    dead_letter,
    record_transient_failure,
    show_again_in,
)
from offload.settings import get_settings

# The most SQS allows for a message's visibility timeout (12 hours).
MAX_VISIBILITY_SECONDS = 43_200
# Larger task results are replaced by a note (see storable_result).
MAX_RESULT_BYTES = 100_000


class OutOfTimeError(TransientTaskError):
    """The Lambda is near its timeout; the record goes back to the queue untouched."""


def parse_message(body: str) -> TaskMessage:
    try:
        return TaskMessage.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidMessageError(f"not a valid task message: {exc}") from exc


def _run_task(message: dict[str, Any]) -> Any:
    return storable_result(get_task(message["kind"]).run(message["payload"]))


def storable_result(result: Any) -> Any:
    """The result as JSON data, or a note if it is too large to keep.

    The result is stored twice (the idempotency record and the task's status), and a DynamoDB
    item holds at most 400 KB: a larger result would fail the store after the effect, and the
    effect would run again on the next delivery. The effect is what counts; the result is not.
    """
    text = json.dumps(result, default=str)
    size = len(text.encode())
    if size <= MAX_RESULT_BYTES:
        return json.loads(text)
    logger.warning(
        "task result too large to keep; replaced by a note",
        extra={"bytes": size, "limit": MAX_RESULT_BYTES},
    )
    return {
        "result_omitted": True,
        "bytes": size,
        "reason": f"the result is {size} bytes; results over {MAX_RESULT_BYTES} are not kept",
    }


@cache
def _runner(
    store: DynamoDBPersistenceLayer,
) -> tuple[IdempotencyConfig, Callable[..., Any]]:
    """The task runner wrapped in Powertools idempotency, keyed on the task id.

    Built once per persistence layer, so clients.reset() in tests gives a fresh one.
    """
    return idempotency.once(
        _run_task,
        store=store,
        data_keyword_argument="message",
        key_jmespath="task_id",
        key_prefix="offload-task",
    )


def _run_once() -> Callable[..., Any]:
    return _runner(idempotency.persistence_layer())[1]


def _guess_task_id(record: SQSRecord) -> UUID | None:
    """The task id of a message that is not a valid task message, if it names one."""
    candidates = [_attribute(record, "task_id") or ""]
    with suppress(ValueError, TypeError, KeyError):
        candidates.insert(0, str(json.loads(record.body)["task_id"]))
    for candidate in candidates:
        try:
            return UUID(candidate)
        except ValueError:
            continue
    return None


def _dead_letter(record: SQSRecord, queue: QueueName, reason: str) -> None:
    """Copy the message to the queue's DLQ with the reason; the caller lets Lambda delete it."""
    dead_letter(record, get_settings().dlq_url(queue), reason)


def _attribute(record: SQSRecord, name: str) -> str | None:
    # Indexing gives a typed attribute (or None); .get() would give the raw dict.
    value = record.message_attributes[name]
    return value.string_value if value is not None else None


def process_record(record: SQSRecord, queue: QueueName, context: LambdaContext) -> Any:
    """Run one record. Its log keys (task, attempt, correlation id) live only while it runs."""
    attempt = int(record.attributes.approximate_receive_count)
    keys: dict[str, Any] = {
        "task_id": _attribute(record, "task_id"),
        "kind": _attribute(record, "kind"),
        "correlation_id": _attribute(record, "correlation_id"),
        "attempt": attempt,
        "message_id": record.message_id,
    }
    # Thread-safe keys: a poller may run several batches in one process (the local system).
    logger.thread_safe_append_keys(**keys)
    try:
        return _process(record, queue, context, attempt)
    finally:
        logger.thread_safe_remove_keys(keys)


def _process(record: SQSRecord, queue: QueueName, context: LambdaContext, attempt: int) -> Any:
    settings = get_settings()
    if context.get_remaining_time_in_millis() < settings.record_time_budget_ms:
        # This receive counts toward maxReceiveCount like a failure, so it waits the same
        # backoff: an outage that slows every invocation must not burn receives faster.
        delay = backoff_seconds(attempt)
        show_again_in(settings.queue_url(queue), record.receipt_handle, delay)
        logger.warning(
            "near the Lambda timeout; record returned to the queue untouched",
            extra={"retry_in_seconds": delay},
        )
        raise OutOfTimeError("too close to the Lambda timeout; returned to the queue untouched")

    try:
        message = parse_message(record.body)
    except InvalidMessageError as exc:
        _poison(record, queue, exc)
        return None
    logger.thread_safe_append_keys(
        task_id=str(message.task_id), kind=message.kind, correlation_id=message.correlation_id
    )
    return _run(record, queue, message, attempt, context.get_remaining_time_in_millis() / 1000)


def _poison(record: SQSRecord, queue: QueueName, exc: InvalidMessageError) -> None:
    """A body that is not a task message: dead-letter it at once, with the reason.

    Nothing else is touched: the task it claims to be (if any) is never read or written on the
    word of a message that failed validation, so a forged or corrupted copy cannot kill a task.
    """
    task_id = _guess_task_id(record)
    logger.error(
        "poison message sent to the DLQ",
        extra={"claimed_task_id": str(task_id) if task_id else None, "reason": str(exc)},
        exc_info=exc,
    )
    _dead_letter(record, queue, str(exc))
    metrics.add_metric(name="PoisonMessages", unit=MetricUnit.Count, value=1)


def _run(
    record: SQSRecord, queue: QueueName, message: TaskMessage, attempt: int, lease_seconds: float
) -> Any:
    settings = get_settings()
    started = time.perf_counter()
    try:
        # A copy of a finished task (succeeded or dead) is a duplicate delivery: the conditional
        # write refuses to move a final task, and the copy is dropped.
        # The lease (this invocation's time left) lets a status read tell a killed worker.
        if not tasks_table.transition(
            message.task_id,
            message.kind,
            TaskState.RUNNING,
            attempts=attempt,
            owner=message.owner,
            lease_seconds=lease_seconds,
        ):
            logger.info("task already finished; duplicate delivery skipped")
            metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
            return None
        logger.info("task started")
        definition = get_task(message.kind)
        if definition.queue != queue:
            raise UnknownTaskError(f"task {message.kind!r} belongs on the {definition.queue} queue")
        message = claim_check.check_out(message)
        result = _run_once()(message=message.model_dump(mode="json"))
    except PermanentTaskError as exc:
        # DLQ first: if the status write then fails, the redelivery dead-letters it again
        # rather than skipping it as finished.
        logger.error(
            "task failed permanently; sent to the DLQ without retry",
            extra={"reason": str(exc)},
            exc_info=exc,
        )
        _dead_letter(record, queue, str(exc))
        tasks_table.transition(
            message.task_id, message.kind, TaskState.DEAD, attempts=attempt, error=str(exc)
        )
        metrics.add_metric(name="TasksDead", unit=MetricUnit.Count, value=1)
        return None
    except IdempotencyAlreadyInProgressError:
        delay = _in_progress_delay(message, attempt)
        show_again_in(settings.queue_url(queue), record.receipt_handle, delay)
        logger.warning("task is running in another delivery", extra={"retry_in_seconds": delay})
        raise
    except Exception as exc:
        delay = record_transient_failure(message.task_id, message.kind, attempt, exc)
        show_again_in(settings.queue_url(queue), record.receipt_handle, delay)
        if attempt >= settings.max_receive_count:
            logger.exception("task failed on its last attempt; SQS moves it to the DLQ")
            metrics.add_metric(name="TasksDead", unit=MetricUnit.Count, value=1)
        else:
            logger.warning(
                "task failed; will retry",
                extra={"retry_in_seconds": delay, "reason": f"{type(exc).__name__}: {exc}"},
                exc_info=exc,
            )
            metrics.add_metric(name="TasksRetried", unit=MetricUnit.Count, value=1)
        raise
    tasks_table.transition(
        message.task_id, message.kind, TaskState.SUCCEEDED, attempts=attempt, result=result
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info("task succeeded", extra={"duration_ms": round(elapsed_ms, 1)})
    metrics.add_metric(name="TasksSucceeded", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="TaskDuration", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    return result


def _in_progress_delay(message: TaskMessage, attempt: int) -> int:
    """When to look again at a task that another delivery holds.

    A live holder finishes soon, so early receives back off briefly. From half the receives
    on, wait until the holder's in-progress record expires (at its Lambda's timeout, if that
    worker died), so that a duplicate never reaches the DLQ only because of the wait.
    """
    delay = backoff_seconds(attempt)
    if attempt > get_settings().max_receive_count // 2:
        left = idempotency.in_progress_seconds_left(
            idempotency.persistence_layer(), message.model_dump(mode="json")
        )
        delay = max(delay, math.ceil(left) + 1)
    return min(delay, MAX_VISIBILITY_SECONDS)


def register_context(context: LambdaContext) -> None:
    """Let in-progress idempotency records expire at this invocation's timeout, and calls that
    must not be cut off check the time left (offload.deadline)."""
    _runner(idempotency.persistence_layer())[0].register_lambda_context(context)
    deadline.start(context)


LambdaHandler = Callable[[dict[str, Any], LambdaContext], PartialItemFailureResponse]


def sqs_handler(queue: QueueName) -> LambdaHandler:
    """The Lambda handler of one queue's worker: `handler = sqs_handler("tasks")`.

    Each record of the SQS batch runs through the task lifecycle (process_record); the handler
    answers with partial batch failures (the function's SQS trigger needs
    `FunctionResponseTypes: [ReportBatchItemFailures]`).
    """
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
