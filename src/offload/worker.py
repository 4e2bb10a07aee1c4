"""Run one SQS task record: the logic behind every worker handler.

Outcomes for a record:
- success: the task is `succeeded`; the record is reported as processed and deleted.
- permanent error (bad message, unknown task, invalid arguments, SES rejection): the message
  is copied to the DLQ at once and reported as processed; the task is `dead`.
- any other error: the record is reported as failed and comes back after a backoff; the task is
  `retrying`, or `dead` once the queue's maxReceiveCount is reached (SQS then moves it).
- a duplicate of a finished task: skipped; the idempotency record returns the first result.
"""

import json
import random
import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from offload.aws import idempotency, sqs, tasks_table
from offload.errors import (
    InvalidMessageError,
    PermanentTaskError,
    TransientTaskError,
    UnknownTaskError,
)
from offload.models import TaskMessage, TaskState
from offload.observability import logger, metrics
from offload.registry import QueueName, get_task
from offload.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef


class OutOfTimeError(TransientTaskError):
    """The Lambda is near its timeout; the record goes back to the queue untouched."""


def parse_message(body: str) -> TaskMessage:
    try:
        return TaskMessage.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidMessageError(f"not a valid task message: {exc}") from exc


def backoff_seconds(attempt: int) -> int:
    """Exponential backoff from the receive count, capped, with equal jitter."""
    settings = get_settings()
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempt - 1))
    return int(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - jitter, not crypto


@cache
def _run_once() -> Callable[..., Any]:
    """The task runner wrapped in Powertools idempotency, keyed on the task id."""
    config = IdempotencyConfig(
        event_key_jmespath="task_id",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=get_settings().idempotency_ttl_seconds,
    )

    @idempotent_function(
        data_keyword_argument="message",
        persistence_store=idempotency.persistence_layer(),
        config=config,
        key_prefix="offload-task",
    )
    def run(message: dict[str, Any]) -> Any:
        return get_task(message["kind"]).run(message["payload"])

    run.config = config  # type: ignore[attr-defined]
    return run


def _guess_task_id(body: str) -> str | None:
    try:
        data = json.loads(body)
        return str(UUID(str(data["task_id"])))
    except (ValueError, TypeError, KeyError):
        return None


def _dead_letter(record: SQSRecord, queue: QueueName, reason: str) -> None:
    """Copy the message to the queue's DLQ with the reason; the caller lets Lambda delete it."""
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        name: {"DataType": value.data_type, "StringValue": value.string_value or ""}
        for name, value in record.message_attributes.items()
        if value.data_type.startswith(("String", "Number")) and name != "error"
    }
    attributes["error"] = {"DataType": "String", "StringValue": reason[:1000]}
    sqs.send_raw(get_settings().dlq_url(queue), record.body, attributes)


def process_record(record: SQSRecord, queue: QueueName, context: LambdaContext) -> Any:
    settings = get_settings()
    attempt = int(record.attributes.approximate_receive_count)
    if context.get_remaining_time_in_millis() < settings.record_time_budget_ms:
        sqs.change_visibility(settings.queue_url(queue), record.receipt_handle, 0)
        raise OutOfTimeError("too close to the Lambda timeout; returned to the queue untouched")

    try:
        message = parse_message(record.body)
    except InvalidMessageError as exc:
        task_id = _guess_task_id(record.body)
        logger.exception(
            "poison message sent to the DLQ",
            extra={"message_id": record.message_id, "task_id": task_id, "attempt": attempt},
        )
        if task_id:
            tasks_table.transition(UUID(task_id), "unknown", TaskState.DEAD, error=str(exc))
        _dead_letter(record, queue, str(exc))
        metrics.add_metric(name="TasksDead", unit=MetricUnit.Count, value=1)
        return None

    keys = {
        "task_id": str(message.task_id),
        "kind": message.kind,
        "attempt": attempt,
        "message_id": record.message_id,
    }
    if message.correlation_id:
        logger.set_correlation_id(message.correlation_id)
    with logger.append_context_keys(**keys):
        return _run(record, queue, message, attempt)


def _run(record: SQSRecord, queue: QueueName, message: TaskMessage, attempt: int) -> Any:
    settings = get_settings()
    started = time.perf_counter()
    try:
        definition = get_task(message.kind)
        if definition.queue != queue:
            raise UnknownTaskError(f"task {message.kind!r} belongs on the {definition.queue} queue")
        if not tasks_table.transition(
            message.task_id, message.kind, TaskState.RUNNING, attempts=attempt
        ):
            logger.info("task already finished; duplicate delivery skipped")
            metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
            return None
        result = _run_once()(message=message.model_dump(mode="json"))
    except PermanentTaskError as exc:
        tasks_table.transition(
            message.task_id, message.kind, TaskState.DEAD, attempts=attempt, error=str(exc)
        )
        logger.exception("task failed permanently; sent to the DLQ without retry")
        _dead_letter(record, queue, str(exc))
        metrics.add_metric(name="TasksDead", unit=MetricUnit.Count, value=1)
        return None
    except IdempotencyAlreadyInProgressError:
        # A concurrent delivery holds the task; leave its status alone and look again later.
        delay = backoff_seconds(attempt)
        sqs.change_visibility(settings.queue_url(queue), record.receipt_handle, delay)
        logger.warning("task is running in another delivery", extra={"retry_in_seconds": delay})
        raise
    except Exception as exc:
        final = attempt >= settings.max_receive_count
        state = TaskState.DEAD if final else TaskState.RETRYING
        tasks_table.transition(
            message.task_id,
            message.kind,
            state,
            attempts=attempt,
            error=f"{type(exc).__name__}: {exc}",
        )
        delay = 0 if final else backoff_seconds(attempt)
        sqs.change_visibility(settings.queue_url(queue), record.receipt_handle, delay)
        if final:
            logger.exception("task failed on its last attempt; SQS moves it to the DLQ")
            metrics.add_metric(name="TasksDead", unit=MetricUnit.Count, value=1)
        else:
            logger.exception("task failed; will retry", extra={"retry_in_seconds": delay})
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


def register_context(context: LambdaContext) -> None:
    """Let in-progress idempotency records expire at this invocation's timeout."""
    _run_once().config.register_lambda_context(context)  # type: ignore[attr-defined]
