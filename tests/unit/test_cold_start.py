"""What the API pays at cold start, and clients built once under concurrency."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from moto import mock_aws

from offload.aws.clients import Clients
from offload.settings import Settings
from offload.wiring import build


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
    # Given a cold composition (no SQS client yet) and 8 threads that ask for one at once
    clients = Clients(Settings())
    start = Barrier(8)

    def first_use() -> int:
        start.wait()
        return id(clients.sqs)

    with mock_aws():
        # When they all ask for its SQS client
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = set(pool.map(lambda _: first_use(), range(8)))
        # Then one client was built and all of them use it
        assert len(ids) == 1
        assert id(clients.sqs) in ids


def test_each_composition_has_its_own_clients(env: None) -> None:
    with mock_aws():
        first, second = build(), build()
        assert first.clients.sqs is first.clients.sqs
        assert second.clients.sqs is not first.clients.sqs
        assert first.tasks.client is first.clients.dynamodb


def test_importing_the_handlers_reads_no_settings_and_builds_no_client() -> None:
    # Given settings that cannot be read (a receive count of 0 is invalid)
    code = (
        "import boto3\n"
        "boto3.client = boto3.session.Session.client = None\n"  # any client built would fail
        "import workers.email, workers.tasks, workers.upload, api.main\n"
        "try:\n"
        "    workers.tasks.handler.runtime\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    env = {
        **os.environ,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
        "OFFLOAD_MAX_RECEIVE_COUNT": "0",
        "PYTHONPATH": "src",
    }
    # When the handler modules are imported, then a worker composes itself
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # Then the imports succeeded, and only the composition read the (invalid) settings
    assert result.stdout.strip().splitlines()[-1] == "ValidationError"
