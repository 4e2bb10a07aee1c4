"""What an enqueue request costs under Mangum beyond its one SQS call: no thread per request.

A thread-pool hop under Mangum starts a new thread for each request (anyio stops its worker
threads when their root task ends, and each Lambda invocation is one); on a 512 MB Lambda
(a third of a core) that was about a tenth of the request's CPU. See benchmarks/enqueue_cpu.py
for the CPU itself.
"""

import threading
from typing import Any

import pytest

from api.main import handler
from tests.support import AwsStack, EventLoader


def test_an_enqueue_request_under_mangum_starts_no_thread(
    aws: AwsStack, event: EventLoader, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a warm API function (its clients and any pools built by earlier requests)
    request = event("api-emails.json")
    for _ in range(5):
        assert handler(request, lambda_context)["statusCode"] == 202
    started: list[str] = []
    original = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        original(thread)

    monkeypatch.setattr(threading.Thread, "start", start)

    # When it serves more POST /emails invocations
    for _ in range(5):
        assert handler(request, lambda_context)["statusCode"] == 202

    # Then none of them started a thread
    assert started == []
