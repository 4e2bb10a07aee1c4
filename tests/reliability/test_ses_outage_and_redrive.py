"""An SES outage that outlasts the queue's receives, then a DLQ redrive in the middle of the run.

The outage is a botocore hook on every SES client: SendEmail to a recipient of OUTAGE_DOMAIN
raises Throttling, until the test ends the outage. Those tasks end `dead`, their messages in
the EmailDeadLetterQueue, while the others succeed. The EmailWorker is the real handler fed by
the real local poller, in threads of this process, and it keeps running while the operator
redrives the DLQ (through `redrive_email_dlq`, the suite's only call of the redrive).

- case 4: more dead letters than one ReceiveMessage returns, and a short poll that comes back
  empty although the DLQ holds messages (as SQS's short polls may): no dead letter is dropped
  silently, and once redriven every dead task succeeds with exactly one email;
- case 3: copies of tasks that already succeeded, in the DLQ, with nothing but their task
  records to tell: redrive never runs them again;
- case 19: a batch whose every record failed transiently is not an invocation error.
"""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from botocore.awsrequest import AWSResponse

from example_app.emails import send_email
from offload import dlq
from offload.enqueue import TaskCall, enqueue
from offload.models import TaskMessage, TaskState
from offload.registry import definition_of
from tests.reliability.harness import (
    Deliveries,
    client_error,
    event_source,
    fast_queues,
    pollers,
    queue_depth,
    sdk_hook,
    wait_until,
)
from tests.reliability.support import print_table
from tests.support import AwsStack, installed, task_message

pytestmark = pytest.mark.timeout(120)

OUTAGE_DOMAIN = "outage.example.com"
RECEIVES = 2
VISIBILITY = 2
SETTLE_SECONDS = 40


# ---------------------------------------------------------------- the operator's redrive
def redrive_email_dlq() -> Any:
    """The operator redrives the EmailDeadLetterQueue (`python -m offload.dlq redrive`)."""
    (pair,) = dlq.queue_pairs(installed().settings, "email")
    return dlq.redrive(installed(), pair)


# ---------------------------------------------------------------- faults
class Outage:
    """SendEmail to OUTAGE_DOMAIN is throttled (raised before the request) until `end()`."""

    def __init__(self) -> None:
        self.active = threading.Event()
        self.active.set()
        self.throttled: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        to = params.get("Destination", {}).get("ToAddresses", [])
        if self.active.is_set() and any(a.endswith("@" + OUTAGE_DOMAIN) for a in to):
            with self.lock:
                self.throttled[to[0]] += 1
            raise client_error("Throttling", "Maximum sending rate exceeded.")

    def end(self) -> None:
        self.active.clear()


class ShortPollMiss:
    """The `nth` ReceiveMessage on `queue_url` while armed answers no messages although the
    queue holds some: SQS's short polls sample a subset of its servers and may do that."""

    def __init__(self, queue_url: str, nth: int = 2) -> None:
        self.queue_url = queue_url
        self.nth = nth
        self.armed = False
        self.receives = 0
        self.fired = 0

    def mark(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if self.armed and params.get("QueueUrl") == self.queue_url:
            self.receives += 1
            if self.receives == self.nth:
                context["reliability_empty_receive"] = True

    def answer(self, context: dict[str, Any], **_: Any) -> Any:
        if not context.pop("reliability_empty_receive", False):
            return None
        self.fired += 1
        metadata = {"HTTPStatusCode": 200, "RetryAttempts": 0}
        return AWSResponse(self.queue_url, 200, {}, None), {"ResponseMetadata": metadata}


# ---------------------------------------------------------------- the run
@dataclass
class Run:
    aws: AwsStack
    outage: Outage
    deliveries: Deliveries = field(default_factory=Deliveries)
    calls: dict[UUID, str] = field(default_factory=dict)  # task id → recipient
    messages: dict[UUID, TaskMessage] = field(default_factory=dict)

    def enqueue(self, recipients: list[str]) -> list[UUID]:
        email = definition_of(send_email)
        calls = [TaskCall(email, email.payload(to=r, subject="Hi", text="x")) for r in recipients]
        for message in enqueue(installed(), calls, correlation_id="reliability-outage"):
            self.messages[message.task_id] = message
        self.calls |= {c.task_id: c.payload["to"] for c in calls}
        return [c.task_id for c in calls]

    def state(self, task_id: UUID) -> str | None:
        record = self.aws.task(task_id)
        return None if record is None else str(record["state"])

    def emails(self) -> Counter[str]:
        return Counter(a for m in self.aws.sent_emails() for a in m.destinations["ToAddresses"])

    def in_dlq(self) -> Counter[str]:
        return Counter(
            str(task_message(m).task_id) for m in self.aws.receive_all(self.aws.email_dlq)
        )

    def settled(self, ids: list[UUID]) -> bool:
        """The email queue is empty and none of `ids` is queued, running or retrying."""
        if queue_depth(self.aws.email_queue):
            return False
        return all(self.state(t) in (TaskState.SUCCEEDED, TaskState.DEAD) for t in ids)

    def describe(self, ids: list[UUID]) -> str:
        states = Counter(self.state(t) for t in ids)
        return f"states {dict(states)}, email queue {installed().sqs.counts(self.aws.email_queue)}"


@pytest.fixture
def run(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    outage = Outage()
    queues = ["EmailQueue"]
    with (
        fast_queues(aws, monkeypatch, queues, receives=RECEIVES, visibility=VISIBILITY),
        sdk_hook("before-parameter-build.sesv2.SendEmail", outage),
    ):
        yield Run(aws, outage)


def _start(run: Run, dead: int, ok: int) -> tuple[list[UUID], list[UUID]]:
    """Tasks for the outage domain, which end dead in the DLQ, and tasks that succeed."""
    doomed = run.enqueue([f"user-{i}@{OUTAGE_DOMAIN}" for i in range(dead)])
    fine = run.enqueue([f"user-{i}@example.com" for i in range(ok)])
    wait_until(
        lambda: run.settled(doomed + fine) and len(run.in_dlq()) >= dead,
        SETTLE_SECONDS,
        lambda: run.describe(doomed + fine) + f", DLQ {installed().sqs.counts(run.aws.email_dlq)}",
    )
    assert all(run.state(t) == TaskState.DEAD for t in doomed), run.describe(doomed)
    assert all(run.state(t) == TaskState.SUCCEEDED for t in fine), run.describe(fine)
    return doomed, fine


# ---------------------------------------------------------------- case 4
def test_redrive_of_more_dead_letters_than_one_receive_drops_none(run: Run) -> None:
    aws = run.aws
    miss = ShortPollMiss(aws.email_dlq)
    source = event_source(aws, "EmailWorker")
    with (
        sdk_hook("before-parameter-build.sqs.ReceiveMessage", miss.mark),
        sdk_hook("before-call.sqs.ReceiveMessage", miss.answer),
        pollers([source], run.deliveries),
    ):
        # Given 14 tasks dead through the outage (more than one receive returns), 6 succeeded
        started = time.monotonic()
        doomed, fine = _start(run, dead=14, ok=6)
        died_at = time.monotonic() - started

        # When the outage ends and the operator redrives while the run goes on (new tasks come
        # in), and one of the redrive's short polls of the DLQ comes back empty
        run.outage.end()
        later = run.enqueue([f"late-{i}@example.com" for i in range(6)])
        miss.armed = True
        redriven = redrive_email_dlq()
        miss.armed = False
        wait_until(
            lambda: run.settled(doomed + later), SETTLE_SECONDS, lambda: run.describe(doomed)
        )

        # Then no dead letter was dropped: each task is succeeded, or still dead with its
        # message in the DLQ (which the operator sees, and can redrive again)
        first = {t: run.state(t) for t in doomed}
        in_dlq = run.in_dlq()
        dropped = [t for t, s in first.items() if s == TaskState.DEAD and not in_dlq[str(t)]]
        assert not dropped, f"{len(dropped)} dead letter(s) dropped silently: {dropped}"
        left = sum(s == TaskState.DEAD for s in first.values())
        if left:
            redrive_email_dlq()
            wait_until(lambda: run.settled(doomed), SETTLE_SECONDS, lambda: run.describe(doomed))

        # ... and in the end every dead task succeeded once, and the DLQ holds none of them
        emails = run.emails()
        for task_id in doomed:
            assert run.state(task_id) == TaskState.SUCCEEDED, task_id
            assert emails[run.calls[task_id]] == 1, (run.calls[task_id], emails[run.calls[task_id]])
        for task_id in fine + later:
            assert emails[run.calls[task_id]] == 1, run.calls[task_id]
        assert not set(run.in_dlq()) & {str(t) for t in doomed}
    print_table(
        "Redrive of more dead letters than one receive returns",
        [
            ("tasks dead through the SES outage (DLQ)", len(doomed)),
            ("tasks that succeeded meanwhile / during the redrive", f"{len(fine)} / {len(later)}"),
            ("SendEmail throttled by the outage", sum(run.outage.throttled.values())),
            ("all dead after", f"{died_at:.1f}s"),
            ("redrive returned (first call)", redriven),
            ("DLQ short polls answered empty by the fault", miss.fired),
            ("dead after the first redrive (left in the DLQ, reported)", left),
            ("emails to the redriven recipients (each once)", len(doomed)),
            ("run time", f"{time.monotonic() - started:.1f}s"),
        ],
    )


# ---------------------------------------------------------------- case 3
def test_redrive_never_runs_a_task_that_already_succeeded(run: Run) -> None:
    aws = run.aws
    source = event_source(aws, "EmailWorker")
    with pollers([source], run.deliveries):
        # Given tasks dead through the outage, and tasks that succeeded
        started = time.monotonic()
        doomed, fine = _start(run, dead=3, ok=6)
        # ... copies of the succeeded ones in the DLQ (their records are all that stops them)
        copies = [run.messages[t] for t in fine]
        assert not installed().sqs.send_messages(aws.email_dlq, copies)
        assert aws.table_items(aws.idempotency_table) == []

        # When the outage ends and the operator redrives the DLQ
        run.outage.end()
        redriven = redrive_email_dlq()
        wait_until(
            lambda: run.settled(doomed + fine) and not queue_depth(aws.email_queue),
            SETTLE_SECONDS,
            lambda: run.describe(doomed + fine),
        )
        time.sleep(VISIBILITY)  # anything redriven late has had time to run
        wait_until(lambda: run.settled(doomed + fine), SETTLE_SECONDS, lambda: run.describe(fine))

        # Then the dead tasks ran once, and the finished ones did not run again
        emails = run.emails()
        for task_id in doomed:
            assert run.state(task_id) == TaskState.SUCCEEDED, task_id
            assert emails[run.calls[task_id]] == 1, run.calls[task_id]
        again = {run.calls[t]: emails[run.calls[t]] for t in fine if emails[run.calls[t]] != 1}
        assert not again, f"finished tasks ran again after the redrive: {again}"
        assert all(run.state(t) == TaskState.SUCCEEDED for t in fine)
        assert not set(run.in_dlq()) & {str(t) for t in doomed}
    print_table(
        "Redrive with copies of succeeded tasks in the DLQ",
        [
            ("tasks dead through the SES outage", len(doomed)),
            ("copies of succeeded tasks put in the DLQ", len(copies)),
            ("redrive returned", redriven),
            ("emails to the succeeded tasks' recipients", sum(emails[run.calls[t]] for t in fine)),
            ("run time", f"{time.monotonic() - started:.1f}s"),
        ],
    )


# ---------------------------------------------------------------- case 19
def test_a_batch_that_only_failed_transiently_is_not_an_invocation_error(run: Run) -> None:
    source = event_source(run.aws, "EmailWorker")
    with pollers([source], run.deliveries):
        # Given an outage for every recipient of a batch
        doomed = run.enqueue([f"batch-{i}@{OUTAGE_DOMAIN}" for i in range(4)])

        # When the worker takes the batch, on every receive
        wait_until(
            lambda: run.settled(doomed),
            SETTLE_SECONDS,
            lambda: run.describe(doomed),
        )

    # Then each invocation returned its failures in batchItemFailures, and none raised
    # (Lambda counts a raised invocation in Errors: that alarm is for crashes)
    print_table(
        "A batch whose every record failed transiently",
        [
            ("invocations", run.deliveries.invocations),
            ("invocations that raised", len(run.deliveries.raised)),
            ("first error raised", (run.deliveries.raised or ["-"])[0][:80]),
        ],
    )
    assert run.deliveries.invocations >= RECEIVES
    assert run.deliveries.raised == [], run.deliveries.raised[:3]
