"""A task whose result is larger than a DynamoDB item (400 KB) can hold (case 6).

`reliability_large_result` is registered here; its effect is counted, and it returns about
500 KB. Its message is delivered three times (duplicates) plus whatever redeliveries follow,
to the TaskWorker (the real handler, fed by the real local poller). The effect must happen
exactly once, and the task end `succeeded` (its result stored behind a pointer, or refused with
a clear permanent error while the effect is recorded as done: how is the fix's choice; here
the task must not run again and must end `succeeded`).
"""

import threading
import time
from collections import Counter

import pytest

from offload.enqueue import TaskCall, enqueue
from offload.models import TaskState
from offload.registry import definition_of, task
from tests.reliability.harness import event_source, fast_queues, poll_until, pollers, queue_depth
from tests.reliability.support import print_table
from tests.support import AwsStack, installed

pytestmark = pytest.mark.timeout(120)

RESULT_CHARS = 500_000
RECEIVES = 4
VISIBILITY = 2
WORKER_TIMEOUT = 4  # seconds: the claim of a failed delivery is leased this long at most
SETTLE_SECONDS = 40

_effects: Counter[str] = Counter()
_lock = threading.Lock()


@task(name="reliability_large_result")
def large_result(key: str, size: int) -> dict[str, str]:
    """Count one effect for `key`, and return a result of `size` characters."""
    with _lock:
        _effects[key] += 1
    return {"key": key, "blob": "x" * size}


def test_a_result_too_large_for_the_record_never_repeats_the_effect(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = event_source(aws, "TaskWorker", timeout=WORKER_TIMEOUT)
    started = time.monotonic()
    with (
        fast_queues(aws, monkeypatch, ["TaskQueue"], receives=RECEIVES, visibility=VISIBILITY),
        pollers([source]),
    ):
        # Given a task with a ~500 KB result, and a small one beside it
        definition = definition_of(large_result)
        big = TaskCall(definition, definition.payload(key=f"big-{time.time()}", size=RESULT_CHARS))
        small = TaskCall(definition, definition.payload(key=f"small-{time.time()}", size=10))

        # When its message is delivered three times (plus any redeliveries)
        messages = enqueue(installed(), [big, small], correlation_id="reliability-large-result")
        duplicates = [m for m in messages if m.task_id == big.task_id] * 2
        assert not installed().sqs.send_messages(aws.task_queue, duplicates)

        def done() -> bool:
            # Nothing more can happen once the queue is empty; a second effect is already wrong
            return _effects[big.payload["key"]] > 1 or not queue_depth(aws.task_queue)

        settled = poll_until(done, SETTLE_SECONDS)

    # Then the effect happened once, and the task succeeded
    record = aws.task(big.task_id)
    assert record is not None
    print_table(
        "A ~500 KB result, its message delivered three times",
        [
            ("effects of the large task (once)", _effects[big.payload["key"]]),
            ("effects of the small task (once)", _effects[small.payload["key"]]),
            ("large task state / attempts", f"{record['state']} / {record.get('attempts')}"),
            ("large task error", str(record.get("error", "-"))[:90]),
            ("run time", f"{time.monotonic() - started:.1f}s"),
        ],
    )
    assert _effects[small.payload["key"]] == 1
    assert settled or _effects[big.payload["key"]] > 1, f"not settled in {SETTLE_SECONDS}s"
    assert _effects[big.payload["key"]] == 1, f"the effect ran {_effects[big.payload['key']]} times"
    assert record["state"] == TaskState.SUCCEEDED, record.get("error")
