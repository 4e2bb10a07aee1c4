"""What the API pays at cold start, and clients built once under concurrency."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from moto import mock_aws

from offload.aws import clients


def test_the_api_handler_does_not_import_the_xray_sdk() -> None:
    # Given a fresh interpreter, as on a Lambda cold start
    code = "import sys\nfrom api.main import handler\nprint('aws_xray_sdk' in sys.modules)"
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    # When the API's handler module is imported
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # Then the X-Ray SDK (only the workers trace) has not been loaded
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_workers_still_get_a_tracer() -> None:
    from aws_lambda_powertools import Tracer

    from offload.observability import tracer

    assert isinstance(tracer, Tracer)


def test_concurrent_first_callers_share_one_client(env: None) -> None:
    # Given a cold process (no SQS client yet) and 8 threads that ask for one at the same moment
    clients.reset()
    start = Barrier(8)

    def first_use() -> int:
        start.wait()
        return id(clients.sqs())

    with mock_aws():
        # When they all call clients.sqs()
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = set(pool.map(lambda _: first_use(), range(8)))
        # Then one client was built and all of them use it
        assert len(ids) == 1
        assert id(clients.sqs()) in ids
    clients.reset()


def test_reset_builds_a_new_client(env: None) -> None:
    with mock_aws():
        before = clients.sqs()
        clients.reset()
        assert clients.sqs() is not before
    clients.reset()
