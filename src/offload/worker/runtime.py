"""The task lifecycle: every record of every queue goes through these steps, written once here.

For each SQS record:
1. Deadline: with less than OFFLOAD_RECORD_TIME_BUDGET_MS left, the record goes back to the
   queue untouched, after the same backoff as a transient failure (the receive counted).
2. Parse, by the queue's source (offload.worker.sources): a body that can never be read is
   poison; it is copied to the queue's DLQ once, with the reason, and nothing else is touched.
   No task is read or written on the word of a message that failed validation.
3. For each task call in the body:
   - claim (TasksTable.claim, one conditional write): the task becomes `running`, leased for
     the invocation's time left, under a claim token. The task record is both the task's status
     and its claim: there is no other run-once record. Refused, the call is not run:
     a copy of a finished or cancelled task is a duplicate delivery: dropped, with a log line;
     a copy of a task that another delivery holds (a live lease) comes back once that lease is
     over (its time left + 1 s, at most SQS's 12 h), and runs then if that holder died;
     a call from an origin other than the one that first claimed the task (a second S3 object)
     is ignored for good;
   - run the task;
   - classify and record the outcome (offload.errors), a second conditional write, on the claim
     token (a claim lost meanwhile, its lease expired and another delivery holding the task, is
     logged and left to the new holder):
     succeeded → `succeeded`, with the result;
     UnprocessableInputError → `failed` with the reason: no retry, no DLQ, no alarm;
     PermanentTaskError → the message is copied to the DLQ first, then `dead`;
     any other error (transient) → `retrying` (`dead` on the queue's last receive: SQS then
     moves the message), back after an exponential backoff with jitter;
   - metrics.
   A task that succeeds costs two DynamoDB writes here, and no read.
4. A record with a call that must come back (transient, held) is reported failed, so that it
   returns after the longest delay its calls asked for; its other calls are done and recorded,
   and a copy of them is dropped as a duplicate. Otherwise Lambda deletes the record.

A direct event that a source reads (S3's, as `sam local invoke` passes it) runs its calls the
same way, as its first delivery; it has no DLQ, and a call that must come back raises, so that
Lambda retries the event.
"""

import json
import math
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from offload import claim_check, deadline
from offload.aws.tasks_table import Claim
from offload.errors import (
    InvalidMessageError,
    PermanentTaskError,
    TaskError,
    TransientTaskError,
    UnknownTaskError,
    UnprocessableInputError,
)
from offload.models import TaskMessage, TaskState
from offload.observability import logger, metrics
from offload.queues import QueueName, queue_named
from offload.registry import get_task
from offload.retries import (
    backoff_seconds,
    dead_letter,
    show_again_in,
    transient_outcome,
)
from offload.wiring import Offload, running
from offload.worker.batch import in_context
from offload.worker.sources import Call, Source

# The most SQS allows for a message's visibility timeout (12 hours).
MAX_VISIBILITY_SECONDS = 43_200
# Larger task results are replaced by a note (see storable_result).
MAX_RESULT_BYTES = 100_000
# The log keys of one call; they live until the end of its record.
CALL_LOG_KEYS = ("task_id", "kind", "correlation_id", "origin")


class OutOfTimeError(TransientTaskError):
    """The Lambda is near its timeout; the record goes back to the queue untouched."""


class NoDeadLetterQueueError(TaskError):
    """The queue's DLQ URL is not set: the record is failed instead, so that the queue's redrive
    policy moves it to the DLQ after its receives."""


class HeldError(TransientTaskError):
    """Another delivery holds the task (a live lease): this copy comes back after it."""


# ---------------------------------------------------------------- running a task, once
def storable_result(result: Any) -> Any:
    """The result as JSON data, or a note if it is too large to keep.

    The result is stored in the task's record, and a DynamoDB item holds at most 400 KB: a
    larger result would fail the write that records the outcome, after the effect, and the
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


class Runtime:
    """What the lifecycle runs with, composed once per worker: the Offload and its settings."""

    def __init__(self, offload: Offload) -> None:
        self.offload = offload
        self.settings = offload.settings

    def run_task(self, message: TaskMessage) -> Any:
        task = get_task(message.kind, self.settings.task_modules)
        with running(self.offload):
            return storable_result(task.run(message.payload))

    def register_context(self, context: LambdaContext) -> None:
        """Calls that must not be cut off check this invocation's time left (offload.deadline)."""
        deadline.start(context)


# ---------------------------------------------------------------- one call
class Delivery:
    """One delivery of a record's calls: its queue, its receive count, the invocation that
    holds it, and the SQS record (None for a direct event) that a call that can never succeed
    is copied to the DLQ from, once."""

    def __init__(
        self,
        runtime: Runtime,
        queue: QueueName,
        attempt: int,
        invocation: deadline.Invocation,
        record: SQSRecord | None = None,
    ) -> None:
        self.runtime = runtime
        self.offload = runtime.offload
        self.queue = queue
        self.attempt = attempt
        self.invocation = invocation
        self.record = record
        self._dead_lettered = False

    @property
    def lease_seconds(self) -> float:
        """How long a task claimed now is held: the invocation's time left."""
        return self.invocation.get_remaining_time_in_millis() / 1000

    def dead_letter(self, reason: str) -> None:
        """Copy the record to the queue's DLQ, once; Lambda then deletes it from the queue. A
        direct event has no record to copy: the task is dead, and the log says why."""
        if self.record is None:
            logger.warning("a direct event has no DLQ: the task is dead, the event is not kept")
        elif not self._dead_lettered:
            _dead_letter(self.runtime, self.record, self.queue, reason)
            self._dead_lettered = True


@dataclass(frozen=True)
class ComeBack:
    """A call that must come back (transient, or held by another delivery): after `seconds`,
    because of `error`."""

    seconds: int
    error: Exception


@dataclass(frozen=True)
class Outcome:
    """How one call ended: the state it left its task in (None: untouched), and whether it
    must come back."""

    state: TaskState | None
    come_back: ComeBack | None = None


@dataclass(frozen=True)
class Run:
    """A claimed run of one task: what its outcome is recorded with."""

    message: TaskMessage
    token: str
    delivery: Delivery

    def record(self, state: TaskState, *, error: str | None = None, result: Any = None) -> None:
        """Record the outcome, on the claim; a claim lost meanwhile leaves the record alone. A
        dead task keeps the body it was delivered with, for POST /tasks/{id}/retry."""
        delivery = self.delivery
        body = delivery.record.body if delivery.record is not None else None
        if not delivery.offload.tasks.finish(
            self.message.task_id,
            self.token,
            state,
            attempts=delivery.attempt,
            error=error,
            result=result,
            message=body,
            queue=delivery.queue,
        ):
            logger.warning(
                "claim lost (its lease expired and another delivery took the task); "
                "outcome not recorded, the record is left to its new holder",
                extra={"outcome": state.value},
            )


def run_call(call: Call, delivery: Delivery) -> Outcome:
    """Claim, run, classify, record and count one task call."""
    message = call.message
    logger.thread_safe_append_keys(
        task_id=str(message.task_id),
        kind=message.kind,
        correlation_id=message.correlation_id,
        origin=call.origin,
    )
    started = time.perf_counter()
    offload = delivery.offload
    try:
        claim = offload.tasks.claim(
            message.task_id,
            message.kind,
            attempts=delivery.attempt,
            lease_seconds=delivery.lease_seconds,
            owner=message.owner,
            origin=call.origin,
        )
    except Exception as exc:  # DynamoDB unreachable: nothing ran, nothing is recorded
        delay = backoff_seconds(delivery.attempt, offload.settings)
        logger.warning(
            "task not claimed; will retry",
            extra={"retry_in_seconds": delay, "reason": f"{type(exc).__name__}: {exc}"},
        )
        return Outcome(None, ComeBack(delay, exc))
    if not claim.taken or claim.token is None:
        return _refused(claim, delivery)
    run = Run(message, claim.token, delivery)
    try:
        logger.info("task started")
        definition = get_task(message.kind, offload.settings.task_modules)
        if definition.queue != delivery.queue:
            raise UnknownTaskError(f"task {message.kind!r} belongs on the {definition.queue} queue")
        result = delivery.runtime.run_task(claim_check.check_out(message, offload.payloads))
    except PermanentTaskError as exc:
        return _dead(run, exc)
    except UnprocessableInputError as exc:
        return _failed(run, exc)
    except Exception as exc:
        return _retrying(run, exc)
    return _succeeded(run, result, started)


def _refused(claim: Claim, delivery: Delivery) -> Outcome:
    if claim.held_seconds is not None:
        # Another delivery holds the task: come back once its lease is over.
        delay = min(math.ceil(claim.held_seconds) + 1, MAX_VISIBILITY_SECONDS)
        logger.warning("task is running in another delivery", extra={"retry_in_seconds": delay})
        error = HeldError(f"task held by another delivery for {claim.held_seconds:.0f} s more")
        return Outcome(None, ComeBack(delay, error))
    if claim.other_origin is not None:
        logger.warning(
            "task claimed from another origin first; ignored",
            extra={"claimed_origin": claim.other_origin},
        )
    elif claim.state is TaskState.CANCELLED:
        logger.info("task cancelled; its message is dropped")
    else:
        # A copy of a finished task (succeeded, failed or dead): the claim refuses to move it.
        logger.info("task already finished; duplicate delivery skipped")
    metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
    return Outcome(None)


def _succeeded(run: Run, result: Any, started: float) -> Outcome:
    run.record(TaskState.SUCCEEDED, result=result)
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info("task succeeded", extra={"duration_ms": round(elapsed_ms, 1)})
    metrics.add_metric(name="TasksSucceeded", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="TaskDuration", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    return Outcome(TaskState.SUCCEEDED)


def _failed(run: Run, exc: UnprocessableInputError) -> Outcome:
    """The input can never succeed: the user is told why; nothing for an operator."""
    run.record(TaskState.FAILED, error=str(exc))
    logger.warning("task input can never succeed; failed", extra={"reason": str(exc)})
    metrics.add_metric(name="TasksFailed", unit=MetricUnit.Count, value=1)
    return Outcome(TaskState.FAILED)


def _dead(run: Run, exc: PermanentTaskError) -> Outcome:
    # DLQ first: if the status write then fails, the redelivery (its claim's lease over)
    # dead-letters it again rather than skipping it as finished.
    logger.error(
        "task failed permanently; sent to the DLQ without retry",
        extra={"reason": str(exc)},
        exc_info=exc,
    )
    run.delivery.dead_letter(str(exc))
    run.record(TaskState.DEAD, error=str(exc))
    metrics.add_metric(name="TasksDead", unit=MetricUnit.Count, value=1)
    return Outcome(TaskState.DEAD)


def _retrying(run: Run, exc: Exception) -> Outcome:
    offload, attempt = run.delivery.offload, run.delivery.attempt
    state, delay = transient_outcome(offload.settings, attempt)
    run.record(state, error=f"{type(exc).__name__}: {exc}")
    if state is TaskState.DEAD:
        logger.error(
            "task failed on its last attempt; SQS moves it to the DLQ",
            extra={"reason": f"{type(exc).__name__}: {exc}"},
            exc_info=exc,
        )
        metrics.add_metric(name="TasksDead", unit=MetricUnit.Count, value=1)
        return Outcome(TaskState.DEAD, ComeBack(delay, exc))
    logger.warning(
        "task failed; will retry",
        extra={"retry_in_seconds": delay, "reason": f"{type(exc).__name__}: {exc}"},
        exc_info=exc,
    )
    metrics.add_metric(name="TasksRetried", unit=MetricUnit.Count, value=1)
    return Outcome(TaskState.RETRYING, ComeBack(delay, exc))


def _come_back(outcomes: list[Outcome]) -> ComeBack | None:
    """Whether the record (or event) must come back: after the longest delay its calls asked,
    failed with the first of their errors."""
    asked = [o.come_back for o in outcomes if o.come_back is not None]
    if not asked:
        return None
    return ComeBack(max(c.seconds for c in asked), asked[0].error)


# ---------------------------------------------------------------- one SQS record
def _attribute(record: SQSRecord, name: str) -> str | None:
    # Indexing gives a typed attribute (or None); .get() would give the raw dict.
    value = record.message_attributes[name]
    return value.string_value if value is not None else None


def process_record(
    record: SQSRecord, queue: QueueName, source: Source, context: LambdaContext, runtime: Runtime
) -> None:
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
        _process(runtime, record, queue, source, context, attempt=attempt)
    finally:
        logger.thread_safe_remove_keys(list({*keys, *CALL_LOG_KEYS}))


def _process(
    runtime: Runtime,
    record: SQSRecord,
    queue: QueueName,
    source: Source,
    context: LambdaContext,
    *,
    attempt: int,
) -> None:
    settings, sqs = runtime.settings, runtime.offload.sqs
    if context.get_remaining_time_in_millis() < settings.record_time_budget_ms:
        # This receive counts toward maxReceiveCount like a failure, so it waits the same
        # backoff: an outage that slows every invocation must not burn receives faster.
        delay = backoff_seconds(attempt, settings)
        show_again_in(sqs, settings.queue_url(queue), record.receipt_handle, delay)
        logger.warning(
            "near the Lambda timeout; record returned to the queue untouched",
            extra={"retry_in_seconds": delay},
        )
        raise OutOfTimeError("too close to the Lambda timeout; returned to the queue untouched")
    try:
        calls = source.calls(record.body, settings)
    except InvalidMessageError as exc:
        _poison(runtime, record, queue, exc)
        return
    delivery = Delivery(runtime, queue, attempt, context, record)
    back = _come_back([run_call(call, delivery) for call in calls])
    if back is not None:
        show_again_in(sqs, settings.queue_url(queue), record.receipt_handle, back.seconds)
        raise back.error


def _poison(
    runtime: Runtime, record: SQSRecord, queue: QueueName, exc: InvalidMessageError
) -> None:
    """A body that the source cannot read: dead-letter it at once, with the reason.

    Nothing else is touched: the task it claims to be (if any) is never read or written on the
    word of a message that failed validation, so a forged or corrupted copy cannot kill a task.
    """
    _dead_letter(runtime, record, queue, str(exc))
    task_id = _guess_task_id(record)
    logger.error(
        "poison message sent to the DLQ",
        extra={"claimed_task_id": str(task_id) if task_id else None, "reason": str(exc)},
        exc_info=exc,
    )
    metrics.add_metric(name="PoisonMessages", unit=MetricUnit.Count, value=1)


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


def _dead_letter(runtime: Runtime, record: SQSRecord, queue: QueueName, reason: str) -> None:
    """Copy the message to the queue's DLQ with the reason; the caller lets Lambda delete it.
    Without a DLQ URL, NoDeadLetterQueueError: the record fails, and comes back."""
    dlq_url = runtime.settings.dlq_url(queue)
    if not dlq_url:
        variable = queue_named(queue).dlq_url_variable
        logger.error(
            "no DLQ URL: the record is failed, for the queue's redrive policy to move it",
            extra={"variable": variable, "reason": reason},
        )
        raise NoDeadLetterQueueError(f"{variable} is not set; not dead-lettered: {reason}")
    dead_letter(runtime.offload.sqs, record, dlq_url, reason)


# ---------------------------------------------------------------- a direct event
def process_event(
    calls: list[Call], queue: QueueName, context: LambdaContext, runtime: Runtime
) -> dict[str, Any]:
    """Run the calls of a direct event (its first delivery), up to record_concurrency at a
    time, each with its own log keys; raise if one must come back, so that Lambda retries the
    event. Returns how many tasks succeeded."""
    delivery = Delivery(runtime, queue, 1, context)
    outcomes = in_context(
        lambda call: run_call(call, delivery), calls, runtime.settings.record_concurrency
    )
    back = _come_back(outcomes)
    if back is not None:
        raise back.error
    return {"processed": sum(o.state is TaskState.SUCCEEDED for o in outcomes)}
