"""Shared fixtures: a clean environment, the stack from template.yaml in moto, events/ and a
Lambda context.

The `aws` fixture provisions the real template once per session (SAM translator, then moto's
CloudFormation, exactly as `make run` does), keeps moto's state between tests with the mock
switched off, and empties the queues, tables and SES outbox after each test.
"""

import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import (
    REGION,
    SENDER,
    STACK_PARAMETERS,
    TEMPLATE,
    AwsStack,
    JsonLogs,
    installed,
    load_event,
)
from tests.support import compose as compose_from_environment

if TYPE_CHECKING:
    from offload.wiring import Offload

# Powertools reads these when offload.observability is imported, which happens while pytest
# collects the test modules: set them before any test module is imported.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "OffloadTests")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "offload-tests")

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "OffloadTests",
}


def _clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "OFFLOAD_")):
            monkeypatch.delenv(name)
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def compose(monkeypatch: pytest.MonkeyPatch) -> Callable[[], "Offload"]:
    """`compose()`: build an Offload from the environment as it is now (settings, fresh
    clients), and run this app's API and workers on it for the rest of the test."""
    return lambda: compose_from_environment(monkeypatch)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, compose: Callable[[], "Offload"]) -> Iterator["Offload"]:
    """No real AWS: dummy credentials and region, no endpoint override, no OFFLOAD_* leftovers;
    the API and the workers run on an Offload composed from that environment."""
    from example_app.settings import get_settings

    _clear_environment(monkeypatch)
    # The example app's own reading of the settings (request validation), from this test's
    # environment: the one cache left, the app's (example_app.settings).
    get_settings.cache_clear()
    yield compose()
    get_settings.cache_clear()


@pytest.fixture
def offload(aws: AwsStack) -> "Offload":
    """What the API and the workers run on in this test: composed from the stack's settings."""
    return installed()


@pytest.fixture
def lambda_context() -> Any:
    from offload.local.lambda_runtime import LambdaContext

    return LambdaContext(function_name="offload-dev-Worker-TEST", timeout_seconds=30)


@pytest.fixture(scope="session")
def _moto_stack() -> Iterator[tuple[Any, AwsStack]]:
    """Create the stack from template.yaml once; moto keeps it while the mock is switched off."""
    from moto import mock_aws

    from offload.local.stack import provision

    with pytest.MonkeyPatch.context() as monkeypatch:
        _clear_environment(monkeypatch)
        # Keeping boto3's default session across tests saves ~0.3 s of model loading per test.
        mock = mock_aws(config={"core": {"reset_boto3_session": False}})
        mock.start()
        try:
            with warnings.catch_warnings():
                # moto's CloudFormation skips alarms and policies; the tests don't need them.
                warnings.filterwarnings("ignore", "Tried to parse", UserWarning)
                stack = provision(None, TEMPLATE, STACK_PARAMETERS)  # type: ignore[arg-type]
        finally:
            mock.stop(remove_data=False)
    functions = {f: stack.environment(f) for f in ("ApiFunction", "TaskWorker", "EmailWorker")}
    offload_env = {k: v for k, v in functions["ApiFunction"].items() if k.startswith("OFFLOAD_")}
    # One source of truth: every function gets the same OFFLOAD_* settings from the template,
    # but for the Idempotency-Key records, which only the API keeps.
    shared = {k: v for k, v in offload_env.items() if k != "OFFLOAD_IDEMPOTENCY_TABLE"}
    for name, variables in functions.items():
        mine = {k: v for k, v in variables.items() if k.startswith("OFFLOAD_")}
        if name != "ApiFunction":
            assert mine == shared, f"{name} has different OFFLOAD_* settings"
    yield mock, AwsStack(environment=offload_env, resources=stack.resources)
    mock.start(reset=False)
    mock.stop()  # and forget everything


@pytest.fixture
def aws(
    env: "Offload",
    monkeypatch: pytest.MonkeyPatch,
    compose: Callable[[], "Offload"],
    _moto_stack: tuple[Any, AwsStack],
) -> Iterator[AwsStack]:
    """moto holding the template's resources, the OFFLOAD_* settings the template gives the
    functions, fresh clients, and a verified SES sender."""
    import boto3

    mock, stack = _moto_stack
    mock.start(reset=False)
    try:
        for name, value in stack.environment.items():
            monkeypatch.setenv(name, value)
        # Each test empties the queues it used; real SQS allows one purge a minute.
        monkeypatch.setenv("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
        compose()
        ses = boto3.client("sesv2", region_name=REGION)
        ses.create_email_identity(EmailIdentity=SENDER)
        # moto's SESv2 always reports VerifiedForSendingStatus false; its v1 API tells the truth.
        status = boto3.client("ses", region_name=REGION).get_identity_verification_attributes(
            Identities=[SENDER]
        )["VerificationAttributes"]
        assert status[SENDER]["VerificationStatus"] == "Success", "the sender must be verified"
        yield stack
    finally:
        try:
            stack.clear()
            for identity in boto3.client("sesv2", region_name=REGION).list_email_identities()[
                "EmailIdentities"
            ]:
                boto3.client("sesv2", region_name=REGION).delete_email_identity(
                    EmailIdentity=identity["IdentityName"]
                )
        finally:
            mock.stop(remove_data=False)


@pytest.fixture
def json_logs() -> Iterator[JsonLogs]:
    """Capture offload's Powertools log lines, formatted by its own JSON formatter."""
    from offload.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        yield JsonLogs(stream)
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def event() -> Callable[[str], dict[str, Any]]:
    return load_event
