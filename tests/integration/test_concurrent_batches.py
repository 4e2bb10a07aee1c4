"""The records of one SQS batch run at the same time (OFFLOAD_RECORD_CONCURRENCY, default 10),
each with its own log keys and its invocation's deadline, answering the same partial batch
response as when they run one after another."""

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from offload import deadline
from offload.enqueue import TaskCall, enqueue
from offload.errors import TransientTaskError
from offload.local.lambda_runtime import LambdaContext
from offload.observability import logger
from offload.registry import definition_of, task
from tests.integration.test_workers import emf_metrics, received_event, task_id_of
from tests.support import AwsStack, JsonLogs, compose, installed
from workers import tasks as task_worker

BATCH = 10
# Long enough for ten records to reach the barrier on a loaded machine; a batch run one record
# after another waits this long once, then every record finds the barrier broken.
BARRIER_SECONDS = 10.0


class Meeting:
    """What the tasks below share with the test."""

    def __init__(self) -> None:
        self.barrier: threading.Barrier | None = None
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()


meeting = Meeting()


@task(name="tests_meet")
def meet(key: str, fail: bool = False) -> dict[str, Any]:
    """Waits at the barrier until all of the batch's records are there; then fails (transient)
    if asked. Returns whether it saw its invocation's deadline."""
    assert meeting.barrier is not None, "the test sets the barrier"
    logger.info("at the barrier", extra={"key": key})
    meeting.barrier.wait()
    logger.info("past the barrier", extra={"key": key})
    if fail:
        raise TransientTaskError(f"{key} fails after the barrier")
    return {"key": key, "seconds_left": deadline.seconds_left()}


@task(name="tests_overlap")
def overlap(key: str) -> str:
    """Counts how many of these run at once."""
    with meeting.lock:
        meeting.running += 1
        meeting.most_running = max(meeting.most_running, meeting.running)
    time.sleep(0.05)
    with meeting.lock:
        meeting.running -= 1
    return key


@pytest.fixture
def barrier() -> Iterator[threading.Barrier]:
    meeting.barrier = threading.Barrier(BATCH, timeout=BARRIER_SECONDS)
    try:
        yield meeting.barrier
    finally:
        meeting.barrier.abort()
        meeting.barrier = None


def enqueue_meetings(count: int, failing: set[int] = frozenset()) -> list[UUID]:  # type: ignore[assignment]
    definition = definition_of(meet)
    calls = [TaskCall(definition, {"key": f"k{i}", "fail": i in failing}) for i in range(count)]
    return [m.task_id for m in enqueue(installed(), calls)]


def full_batch(aws: AwsStack, count: int) -> dict[str, Any]:
    batch = received_event(aws.task_queue)
    assert len(batch["Records"]) == count, "one receive gets the whole batch"
    return batch


def test_the_records_of_a_batch_run_at_the_same_time(
    aws: AwsStack,
    barrier: threading.Barrier,
    json_logs: JsonLogs,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given ten tasks that each wait until all ten are running
    task_ids = enqueue_meetings(BATCH)
    batch = full_batch(aws, BATCH)

    # When the TaskWorker handles the batch (default concurrency: 10)
    response = task_worker.handler(batch, LambdaContext("offload-dev-TaskWorker", 60))

    # Then every record met the others at the barrier and succeeded
    assert response == {"batchItemFailures": []}
    assert not barrier.broken
    for task_id in task_ids:
        status = aws.task(task_id)
        assert status is not None and status["state"] == "succeeded", status
        # The invocation's deadline reached the record's thread
        assert json.loads(status["result"])["seconds_left"] is not None
    # And each log line, written while all ten ran at once, carries its own record's keys
    by_task = {task_id_of(r): r["messageId"] for r in batch["Records"]}
    met = json_logs.find("at the barrier") + json_logs.find("past the barrier")
    assert len(met) == 2 * BATCH
    key_of = {str(t): f"k{i}" for i, t in enumerate(task_ids)}
    for line in met:
        assert line["key"] == key_of[line["task_id"]], line
        assert line["message_id"] == by_task[line["task_id"]], line
    succeeded = json_logs.find("task succeeded")
    assert sorted(line["task_id"] for line in succeeded) == sorted(map(str, task_ids))
    # And the metrics of every thread were counted
    assert emf_metrics(capsys.readouterr().out)["TasksSucceeded"] == BATCH


def test_partial_failures_are_reported_per_record_when_records_run_at_once(
    aws: AwsStack, barrier: threading.Barrier, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retry at once: the failed records are visible again for the second look below.
    monkeypatch.setenv("OFFLOAD_RETRY_BASE_SECONDS", "0")
    compose(monkeypatch)
    # Given ten tasks that meet at the barrier, of which four then fail transiently
    failing = {1, 4, 5, 8}
    task_ids = enqueue_meetings(BATCH, failing)
    batch = full_batch(aws, BATCH)

    # When the TaskWorker handles the batch
    response = task_worker.handler(batch, LambdaContext("offload-dev-TaskWorker", 60))

    # Then exactly those four records are reported, in the batch's order
    failed_ids = {str(task_ids[i]) for i in failing}
    assert response == {
        "batchItemFailures": [
            {"itemIdentifier": r["messageId"]}
            for r in batch["Records"]
            if task_id_of(r) in failed_ids
        ]
    }
    assert not barrier.broken
    for i, task_id in enumerate(task_ids):
        status = aws.task(task_id)
        assert status is not None
        assert status["state"] == ("retrying" if i in failing else "succeeded"), (i, status)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_record_concurrency_bounds_how_many_records_run_at_once(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    monkeypatch.setenv("OFFLOAD_RECORD_CONCURRENCY", str(concurrency))
    compose(monkeypatch)
    meeting.most_running = 0
    definition = definition_of(overlap)
    calls = [TaskCall(definition, {"key": f"o{i}"}) for i in range(BATCH)]
    task_ids = [m.task_id for m in enqueue(installed(), calls)]

    response = task_worker.handler(
        full_batch(aws, BATCH), LambdaContext("offload-dev-TaskWorker", 60)
    )

    assert response == {"batchItemFailures": []}
    if concurrency == 1:
        assert meeting.most_running == 1
    else:
        assert 1 < meeting.most_running <= concurrency
    for task_id in task_ids:
        status = aws.task(task_id)
        assert status is not None and status["state"] == "succeeded"
