"""The records of one batch, run at the same time: a thread each, up to the settings'
record_concurrency (OFFLOAD_RECORD_CONCURRENCY).

A worker's records wait on the network (DynamoDB, SES, S3), so threads overlap them well.
Powertools' BatchProcessor runs records one after another and offers no threaded processor
(aws-powertools/powertools-lambda-python#2500), so ConcurrentBatchProcessor is BatchProcessor
with its `process` step run by in_context; everything else (the SQSRecord each record handler
gets, the partial batch response) is Powertools'.

Copies of one task in a batch (the same task_id attribute) run one after another, so that the
later one is dropped as a duplicate, as when every record ran one after another.

Each record runs in its own copy of the caller's contextvars (contextvars.copy_context), so
what the invocation set (the deadline, offload.deadline) reaches it, and what the record sets
(its log keys: logger.thread_safe_append_keys) stays its own.
"""

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

T = TypeVar("T")
R = TypeVar("R")


def in_context(run: Callable[[T], R], items: Sequence[T], concurrency: int) -> list[R]:
    """run(item) for each item, at most `concurrency` at a time, each in its own copy of the
    caller's context; the results in the items' order. With a concurrency of 1 (or a single
    item) they run one after another in this thread, each in its own copy all the same."""
    if concurrency <= 1 or len(items) <= 1:
        return [contextvars.copy_context().run(run, item) for item in items]
    workers = min(concurrency, len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="offload-record") as pool:
        # Each copy is taken here, in the caller's thread: a pool thread has a context of its own.
        futures = [pool.submit(contextvars.copy_context().run, run, item) for item in items]
        return [future.result() for future in futures]


class ConcurrentBatchProcessor(BatchProcessor):
    """Powertools' BatchProcessor for SQS, its records run `concurrency` at a time.

    A batch whose every record failed is still a partial failure (not an exception): Lambda's
    Errors metric then counts crashes only, not ordinary retries. Use one per invocation: it
    holds the batch it processes.
    """

    def __init__(self, concurrency: int) -> None:
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self.concurrency = concurrency

    def process(self) -> list[tuple[Any, ...]]:
        # Copies of one task (the same task_id attribute) run one after another, in one thread:
        # the later copy then finds the task finished and is dropped as a duplicate, instead of
        # finding it running and coming back after the lease.
        copies: dict[str, list[int]] = {}
        for index, record in enumerate(self.records):
            copies.setdefault(_task_id(record) or f"record {index}", []).append(index)

        def run(indexes: list[int]) -> list[tuple[int, tuple[Any, ...]]]:
            return [
                (i, contextvars.copy_context().run(self._process_record, self.records[i]))
                for i in indexes
            ]

        results: list[tuple[Any, ...]] = [()] * len(self.records)
        for ran in in_context(run, list(copies.values()), self.concurrency):
            for index, result in ran:
                results[index] = result
        # The records' threads reported their outcomes in the order they finished: report the
        # failures in the batch's order instead.
        self.fail_messages[:] = [record for status, _, record in results if status == "fail"]
        return results


def _task_id(record: dict[str, Any]) -> str | None:
    """The task_id message attribute of a raw SQS record (task messages carry one)."""
    attribute = (record.get("messageAttributes") or {}).get("task_id") or {}
    value = attribute.get("stringValue") if isinstance(attribute, dict) else None
    return value if isinstance(value, str) else None
