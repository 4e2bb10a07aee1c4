"""The record's time budget covers the worst case of the calls a record makes."""

import pytest

from offload.aws import clients
from offload.settings import Settings, aws_call_worst_seconds


def test_the_defaults_leave_room_for_one_ses_attempt_and_the_write_that_records_it() -> None:
    settings = Settings()

    # SES: one attempt, cut off by its timeouts; DynamoDB/SQS: three attempts of 1 s + 2 s and
    # the SDK's backoffs between them (at most 1 s, then 2 s)
    assert aws_call_worst_seconds() == 3 * (1 + 2) + 1 + 2
    assert settings.ses_send_seconds == (
        settings.ses_connect_timeout_seconds
        + settings.ses_read_timeout_seconds
        + aws_call_worst_seconds()
    )
    assert settings.record_time_budget_ms / 1000 > settings.ses_send_seconds


@pytest.mark.usefixtures("env")
def test_the_clients_are_configured_as_the_budget_assumes() -> None:
    # (Configs, not clients: a boto3 session built here, before moto is imported, would escape
    # moto in the integration tests of the same run.)
    settings = Settings()
    ses = clients.ses_config(settings)

    assert ses.retries == {"mode": "standard", "total_max_attempts": 1}
    assert ses.connect_timeout == settings.ses_connect_timeout_seconds
    assert ses.read_timeout == settings.ses_read_timeout_seconds
    # DynamoDB and SQS: what aws_call_worst_seconds() counts
    assert clients.RETRIED.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (clients.RETRIED.connect_timeout, clients.RETRIED.read_timeout) == (1, 2)
