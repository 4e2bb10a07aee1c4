"""Worker processes SIGKILLed in the middle of a task, at the worst moments.

The victim is a TaskWorker in its own process (the real poller and handler, through moto's
server), running `reliability_hold` (tests/reliability/fault_tasks.py): it fails transiently
until the call that the test chose, and hangs there until the test SIGKILLs the process. Then
the TaskWorker goes on in this process, as Lambda would start a new instance, with every other
function the template triggers from the TaskQueue or its DLQ.

- case 18: the kill happens on the task's LAST receive (the queue's maxReceiveCount). Once its
  message is in the DLQ, GET /tasks/{id} must say `dead`, with a reason;
- case 7: the kill happens on the first receive; the redeliveries find the dead holder's claim,
  and must wait until its lease is over (the documented wait), not reach the DLQ: the task then
  succeeds, its effect once.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.main import app
from offload.enqueue import TaskCall, enqueue
from offload.models import TaskState
from offload.registry import definition_of
from tests.reliability import fault_tasks
from tests.reliability.harness import (
    event_source,
    fast_queues,
    moto_server,
    poll_until,
    pollers,
    queue_depth,
    triggers_on,
    worker_process,
)
from tests.reliability.support import print_table
from tests.support import AwsStack, installed

pytestmark = pytest.mark.timeout(120)

VICTIM_TIMEOUT = 5  # seconds: the killed instance's timeout, when its claims expire
VISIBILITY = 2


@contextmanager
def victim_killed_while_holding(
    aws: AwsStack, key: str, hold_on_call: int
) -> Iterator[tuple[UUID, float]]:
    """Enqueue `reliability_hold` for `key`; a TaskWorker process takes it, fails it until call
    `hold_on_call`, and is SIGKILLed inside that call. Yields (task id, seconds until the kill);
    meanwhile the TaskWorker and the functions on the task DLQ run in this process."""
    source = event_source(aws, "TaskWorker")
    victim_source = replace(
        source,
        timeout=VICTIM_TIMEOUT,
        environment=source.environment
        | {
            "OFFLOAD_TASK_MODULES": fault_tasks.__name__,
            fault_tasks.HOLD_ON_CALL: str(hold_on_call),
        },
    )
    others = [
        event_source(aws, t.function, queue=t.queue)
        for t in triggers_on(["TaskQueue", "TaskDeadLetterQueue"], besides=["TaskWorker"])
    ]
    definition = definition_of(fault_tasks.hold)
    started = time.monotonic()
    with moto_server() as endpoint, worker_process(victim_source, endpoint) as victim:
        call = TaskCall(definition, definition.payload(key=key))
        enqueue(installed(), [call], correlation_id="reliability-killed")
        holding = poll_until(
            lambda: any(fault_tasks.HOLDING in r for r in victim.records), 40, 0.02
        )
        assert holding, f"the worker never reached the call to kill in: {victim.messages()}"
        victim.kill()
        killed_at = time.monotonic() - started
        with pollers([source, *others]):
            yield call.task_id, killed_at


def test_a_worker_killed_on_the_last_receive_leaves_its_task_dead(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    receives = 3
    key = f"last-receive-{time.time()}"
    api = TestClient(app)
    with (
        fast_queues(aws, monkeypatch, ["TaskQueue"], receives=receives, visibility=VISIBILITY),
        victim_killed_while_holding(aws, key, hold_on_call=receives) as (task_id, killed_at),
    ):
        # Given a task whose worker was killed on its last receive
        # When its message has reached the DLQ
        in_dlq = poll_until(lambda: queue_depth(aws.task_dlq) >= 1, 20)
        reached = time.monotonic()
        # Then GET /tasks/{id} says dead, with a reason (once the instance's timeout is over)
        shown: dict[str, Any] = {}

        def dead() -> bool:
            shown.update(api.get(f"/tasks/{task_id}").json())
            return shown.get("state") == TaskState.DEAD and bool(shown.get("error"))

        poll_until(dead, VICTIM_TIMEOUT + 2 * VISIBILITY + 3)
        waited = time.monotonic() - reached
    print_table(
        "A worker killed on the task's last receive",
        [
            ("receives before the kill (maxReceiveCount)", receives),
            ("worker killed after", f"{killed_at:.1f}s"),
            ("message in the DLQ", in_dlq),
            (
                "GET /tasks/{id} after the DLQ (state, error)",
                f"{shown.get('state')}, {shown.get('error')}"[:100],
            ),
            ("waited for it", f"{waited:.1f}s"),
        ],
    )
    assert in_dlq, "the message never reached the DLQ"
    assert shown.get("state") == TaskState.DEAD, shown
    assert str(shown.get("error") or "").strip(), shown
    assert fault_tasks.effects[key] == 0


def test_a_duplicate_waits_for_a_dead_holder_instead_of_reaching_the_dlq(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    receives = 4
    key = f"held-by-the-dead-{time.time()}"
    with (
        fast_queues(aws, monkeypatch, ["TaskQueue"], receives=receives, visibility=VISIBILITY),
        victim_killed_while_holding(aws, key, hold_on_call=1) as (task_id, killed_at),
    ):
        # Given a worker killed while it held the task's claim
        # When the redeliveries come, at receive 2, 3, ...
        def settled() -> bool:
            record = aws.task(task_id)
            final = record is not None and TaskState(record["state"]).is_final
            return final or not queue_depth(aws.task_queue)

        poll_until(settled, VICTIM_TIMEOUT + receives * (VISIBILITY + 2) + 5)
        poll_until(lambda: not queue_depth(aws.task_queue), 2 * VISIBILITY)
        record = aws.task(task_id) or {}
    print_table(
        "A duplicate held by a dead worker's claim",
        [
            ("worker killed after", f"{killed_at:.1f}s"),
            ("its claim's lease ends after (its timeout)", f"{VICTIM_TIMEOUT}s"),
            ("task state / attempts", f"{record.get('state')} / {record.get('attempts')}"),
            ("messages in the DLQ", queue_depth(aws.task_dlq)),
            ("effects", fault_tasks.effects[key]),
        ],
    )
    # Then the task ran once, after the lease, and nothing reached the DLQ
    assert record.get("state") == TaskState.SUCCEEDED, record
    assert fault_tasks.effects[key] == 1, fault_tasks.effects[key]
    assert queue_depth(aws.task_dlq) == 0
