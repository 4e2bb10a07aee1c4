"""EmailWorker processes SIGKILLed inside an SES call, at the worst moments.

The victim is an EmailWorker in its own process (the real poller and handler, through moto's
server); moto's SendEmail holds the victim's request until the test has killed the process,
then fails it (the email is never recorded). After the kill, the EmailWorker goes on in this
process, as Lambda would start a new instance, with every other function the template triggers
from the EmailQueue or its DLQ.

- case 18: the kill happens on the task's LAST receive (the queue's maxReceiveCount). Once
  its message is in the DLQ, GET /tasks/{id} must say `dead`, with a reason;
- case 7: the kill happens on the first receive; the redeliveries find the dead holder's
  in-progress record, and from half the receives on must wait until it expires (the documented
  wait), not reach the DLQ: the task then succeeds with exactly one email.
"""

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from moto.core.exceptions import JsonRESTError
from moto.sesv2.responses import SESV2Response

from api.main import app
from offload.emails import send_email
from offload.enqueue import TaskCall, enqueue
from offload.models import TaskState
from offload.registry import definition_of
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
from tests.support import AwsStack

pytestmark = pytest.mark.timeout(120)

VICTIM_TIMEOUT = 5  # seconds: the killed instance's timeout, when its in-progress record expires
VISIBILITY = 2
MARKER = "offload-reliability-victim"


class HeldSendEmail:
    """moto's SendEmail for one recipient: requests before `hold_at` fail transiently (400
    InternalFailure: no SDK retry), request `hold_at` is held until the test releases it, then
    fails (the caller is gone): no email is recorded for either."""

    def __init__(self, recipient: str, hold_at: int) -> None:
        self.recipient = recipient
        self.hold_at = hold_at
        self.requests = 0
        self.held = threading.Event()
        self.release = threading.Event()

    def wrap(self, original: Callable[[SESV2Response], Any]) -> Callable[[SESV2Response], Any]:
        fault = self

        def send_email(response: SESV2Response) -> Any:
            to = json.loads(response.body).get("Destination", {}).get("ToAddresses", [])
            if fault.recipient in to and not fault.release.is_set():
                fault.requests += 1
                if fault.requests < fault.hold_at:
                    raise JsonRESTError("InternalFailure", "try again")
                if fault.requests == fault.hold_at:
                    fault.held.set()
                    fault.release.wait(30)
                    raise JsonRESTError("ServiceUnavailable", "the caller is gone")
            return original(response)

        return send_email


@contextmanager
def victim_killed_while_held(
    aws: AwsStack, held: HeldSendEmail, recipient: str
) -> Iterator[tuple[UUID, float]]:
    """Enqueue a task for `recipient`; an EmailWorker process takes it and is SIGKILLed while
    SES holds its request. Yields (task id, seconds until the kill); the
    EmailWorker and the functions on the email DLQ then run in this process."""
    source = event_source(aws, "EmailWorker", timeout=VICTIM_TIMEOUT)
    others = [
        event_source(aws, t.function)
        for t in triggers_on(["EmailQueue", "EmailDeadLetterQueue"], besides=["EmailWorker"])
    ]
    email = definition_of(send_email)
    started = time.monotonic()
    with moto_server() as endpoint, worker_process(source, endpoint, MARKER) as victim:
        call = TaskCall(email, email.payload(to=recipient, subject="Hi", text="x"))
        enqueue([call], correlation_id="reliability-killed")
        try:
            assert held.held.wait(40), f"SES never held the request: {victim.messages()}"
            victim.kill()
        finally:
            held.release.set()
        killed_at = time.monotonic() - started
        with pollers([source, *others]):
            yield call.task_id, killed_at


def test_a_worker_killed_on_the_last_receive_leaves_its_task_dead(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    receives = 3
    recipient = "last-receive@example.com"
    held = HeldSendEmail(recipient, hold_at=receives)
    monkeypatch.setattr(SESV2Response, "send_email", held.wrap(SESV2Response.send_email))
    api = TestClient(app)
    with (
        fast_queues(aws, monkeypatch, ["EmailQueue"], receives=receives, visibility=VISIBILITY),
        victim_killed_while_held(aws, held, recipient) as (task_id, killed_at),
    ):
        # Given a task whose worker was killed on its last receive
        # When its message has reached the DLQ
        in_dlq = poll_until(lambda: queue_depth(aws.email_dlq) >= 1, 20)
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
            ("receives before the kill (maxReceiveCount)", f"{held.requests} ({receives})"),
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


def test_a_duplicate_waits_for_a_dead_holder_instead_of_reaching_the_dlq(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    receives = 4
    recipient = "held-by-the-dead@example.com"
    held = HeldSendEmail(recipient, hold_at=1)
    monkeypatch.setattr(SESV2Response, "send_email", held.wrap(SESV2Response.send_email))
    with (
        fast_queues(aws, monkeypatch, ["EmailQueue"], receives=receives, visibility=VISIBILITY),
        victim_killed_while_held(aws, held, recipient) as (task_id, killed_at),
    ):
        # Given a worker killed while it held the task's in-progress record
        # When the redeliveries come, at receive 2, 3, ... (half the receives and more)
        def settled() -> bool:
            record = aws.task(task_id)
            final = record is not None and TaskState(record["state"]).is_final
            return final or not queue_depth(aws.email_queue)

        poll_until(settled, VICTIM_TIMEOUT + receives * (VISIBILITY + 2) + 5)
        poll_until(lambda: not queue_depth(aws.email_queue), 2 * VISIBILITY)
        record = aws.task(task_id) or {}
    emails = Counter(a for m in aws.sent_emails() for a in m.destinations["ToAddresses"])
    print_table(
        "A duplicate held by a dead worker's in-progress record",
        [
            ("worker killed after", f"{killed_at:.1f}s"),
            ("in-progress record expires after (its timeout)", f"{VICTIM_TIMEOUT}s"),
            ("task state / attempts", f"{record.get('state')} / {record.get('attempts')}"),
            ("messages in the DLQ", queue_depth(aws.email_dlq)),
            ("emails", emails[recipient]),
        ],
    )
    # Then the task ran once, after the expiry, and nothing reached the DLQ
    assert record.get("state") == TaskState.SUCCEEDED, record
    assert emails[recipient] == 1, emails[recipient]
    assert queue_depth(aws.email_dlq) == 0
