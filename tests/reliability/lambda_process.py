"""One local poller in its own process, as a Lambda instance: `python -m
tests.reliability.lambda_process '<event source json>'`.

The same as `python -m offload.local poll`, plus one JSON line on stdout when each invocation starts
and when it ends. The test reads them to hold the process to its function's timeout and memory
from outside, as Lambda does (a thread in here could not run while the worker is inside a long
C call, such as the csv module parsing one huge record).
"""

import json
import logging
import os
import signal
import sys
import time
from typing import Any

from offload.local.poller import Poller
from offload.local.stack import EventSource

MARKER = "lambda_invocation"


def _mark(phase: str, request_id: str) -> None:
    line = {MARKER: phase, "request_id": request_id, "at": time.time()}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main(spec: str) -> None:
    source = EventSource(**json.loads(spec))
    os.environ.update(source.environment)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    poller = Poller(source)
    handler = poller.handler

    def invoke(event: dict[str, Any], context: Any) -> Any:
        _mark("start", context.aws_request_id)
        try:
            return handler(event, context)
        finally:
            _mark("end", context.aws_request_id)

    poller.handler = invoke
    signal.signal(signal.SIGTERM, lambda *_: poller.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: poller.stopping.set())
    poller.run()


if __name__ == "__main__":
    main(sys.argv[1])
