"""Faults inside the SES call, not raised before it (case 5).

The EmailWorker (the real handler, fed by the real local poller in this process) reaches SES
through moto's HTTP server, which sometimes accepts the SendEmail (the email is sent) and then
answers 500, or answers only after longer than any read timeout that fits the record's time
budget. The client cannot tell whether the email went out: these are the ambiguous failures.

Outcomes: SES receives at most one request per delivery (a non-idempotent call is not retried
by the SDK; the queue does the retrying), each task ends `succeeded` with at most 1 + (the
ambiguous failures injected for it) emails, and every SendEmail call returns within the
record's time budget (OFFLOAD_RECORD_TIME_BUDGET_MS).
"""

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from moto.core.exceptions import JsonRESTError
from moto.sesv2.responses import SESV2Response

from example_app.emails import send_email
from offload.enqueue import TaskCall, enqueue
from offload.models import TaskState
from offload.registry import definition_of
from tests.reliability.harness import (
    Deliveries,
    event_source,
    fast_queues,
    moto_server,
    pollers,
    queue_depth,
    sdk_hook,
    service_over_http,
    wait_until,
)
from tests.reliability.support import print_table
from tests.support import AwsStack, installed

pytestmark = pytest.mark.timeout(120)

BUDGET_MS = 2_000  # the record's time budget
SLOW_SECONDS = BUDGET_MS / 1000 + 1.5  # slower than any read timeout within the budget
RECEIVES = 4
VISIBILITY = 3
SETTLE_SECONDS = 45
PLAN = {"fails-after-sending": 3, "slow-after-sending": 2, "clean": 3}


class InternalFailureError(JsonRESTError):
    code = 500


class AmbiguousSes:
    """moto's SendEmail, except that each planned recipient's first request is processed and
    then answered with a 500, or answered after SLOW_SECONDS."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.ambiguous: Counter[str] = Counter()

    def wrap(self, original: Callable[[SESV2Response], Any]) -> Callable[[SESV2Response], Any]:
        faults = self

        def send_email(response: SESV2Response) -> Any:
            import json

            to = json.loads(response.body).get("Destination", {}).get("ToAddresses", ["?"])[0]
            with faults.lock:
                faults.requests[to] += 1
                first = faults.requests[to] == 1
            answer = original(response)  # the email is sent
            if first and to.startswith(("fails-after-sending", "slow-after-sending")):
                with faults.lock:
                    faults.ambiguous[to] += 1
                if to.startswith("fails-after-sending"):
                    raise InternalFailureError("InternalFailure", "the service failed; try again")
                time.sleep(SLOW_SECONDS)
            return answer

        return send_email


class CallTimes:
    """How long each SendEmail API call took in the worker, as the worker saw it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.longest: dict[str, float] = {}
        self.calls: Counter[str] = Counter()

    def start(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["reliability_to"] = params.get("Destination", {}).get("ToAddresses", ["?"])[0]
        context["reliability_started"] = time.monotonic()

    def end(self, context: dict[str, Any], **_: Any) -> None:
        started = context.pop("reliability_started", None)
        if started is None:
            return
        to = context["reliability_to"]
        with self.lock:
            self.calls[to] += 1
            self.longest[to] = max(self.longest.get(to, 0.0), time.monotonic() - started)


def test_ambiguous_ses_failures_send_at_most_one_request_per_delivery(
    aws: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SES behind moto's server, failing after sending (500) or answering too slowly
    ses = AmbiguousSes()
    times = CallTimes()
    monkeypatch.setattr(SESV2Response, "send_email", ses.wrap(SESV2Response.send_email))
    deliveries = Deliveries()
    settings = {
        "OFFLOAD_RECORD_TIME_BUDGET_MS": str(BUDGET_MS),
        # The SES call's own timeouts (one attempt), within the budget
        "OFFLOAD_SES_CONNECT_TIMEOUT_SECONDS": "0.5",
        "OFFLOAD_SES_READ_TIMEOUT_SECONDS": "1",
    }
    started = time.monotonic()
    with (
        fast_queues(
            aws,
            monkeypatch,
            ["EmailQueue"],
            receives=RECEIVES,
            visibility=VISIBILITY,
            settings=settings,
        ),
        moto_server() as endpoint,
        service_over_http("sesv2", endpoint),
        sdk_hook("before-parameter-build.sesv2.SendEmail", times.start),
        sdk_hook("after-call.sesv2.SendEmail", times.end),
        sdk_hook("after-call-error.sesv2.SendEmail", times.end),
        pollers([event_source(aws, "EmailWorker")], deliveries),
    ):
        # When tasks are sent to recipients with and without those faults
        email = definition_of(send_email)
        recipients = [f"{kind}-{i}@example.com" for kind, n in PLAN.items() for i in range(n)]
        calls = [TaskCall(email, email.payload(to=r, subject="Hi", text="x")) for r in recipients]
        enqueue(installed(), calls, correlation_id="reliability-ambiguous")
        to_of: dict[UUID, str] = {c.task_id: c.payload["to"] for c in calls}

        def settled() -> bool:
            states = [aws.task(t) for t in to_of]
            final = all(s is not None and TaskState(s["state"]).is_final for s in states)
            return final and not queue_depth(aws.email_queue)

        wait_until(settled, SETTLE_SECONDS, lambda: str([aws.task(t) for t in to_of]))
    elapsed = time.monotonic() - started

    # Then each task succeeded; SES got at most one request per delivery; the duplicate
    # emails are at most the ambiguous failures; every call ended within the record's budget
    emails = Counter(a for m in aws.sent_emails() for a in m.destinations["ToAddresses"])
    rows = []
    for task_id, to in to_of.items():
        record = aws.task(task_id)
        assert record is not None
        rows.append(
            (
                to,
                f"{record['state']}, {deliveries.records[str(task_id)]} deliveries, "
                f"{ses.requests[to]} requests, {emails[to]} emails, "
                f"longest call {times.longest.get(to, 0):.2f}s",
            )
        )
    rows += [
        ("ambiguous failures injected", sum(ses.ambiguous.values())),
        ("record time budget", f"{BUDGET_MS} ms"),
        ("run time", f"{elapsed:.1f}s"),
    ]
    print_table("SES answers 500 after sending, or too slowly", rows)
    for task_id, to in to_of.items():
        record = aws.task(task_id)
        assert record is not None and record["state"] == TaskState.SUCCEEDED, (to, record)
        delivered = deliveries.records[str(task_id)]
        assert ses.requests[to] <= delivered, (
            f"{to}: {ses.requests[to]} requests in {delivered} deliveries"
        )
        assert 1 <= emails[to] <= 1 + ses.ambiguous[to], f"{to}: {emails[to]} emails"
        assert times.longest.get(to, 0) <= BUDGET_MS / 1000, (
            f"{to}: a call took {times.longest[to]:.2f}s"
        )
