"""Figure (a) in a fresh process: import the handler, then its first request (a cold start).

`python -m benchmarks._cold {offload|bare} OUT.json` imports `api.main.handler` (or the bare
baseline's), then sends it one `POST /emails` (HTTP API v2 event), and writes both times in ms
to OUT.json. The interpreter's own start is not counted. The AWS resources are the caller's
(benchmarks._enqueue.provision), reached through AWS_ENDPOINT_URL.
"""

import json
import sys
import time
from pathlib import Path


def main(subject: str, out: Path) -> None:
    start = time.perf_counter()
    if subject == "offload":
        from api.main import handler
    else:
        from benchmarks.baselines.bare_handler import handler
    imported = time.perf_counter()
    from benchmarks._enqueue import Context, emails_event  # not counted: the event's plumbing

    event, context = emails_event(), Context()
    first = time.perf_counter()
    response = handler(event, context)
    answered = time.perf_counter()
    if response["statusCode"] != 202:
        raise RuntimeError(f"{subject}: {response['statusCode']} {response['body']}")
    result = {
        "import_ms": (imported - start) * 1000,
        "cold_ms": (imported - start + answered - first) * 1000,
    }
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
