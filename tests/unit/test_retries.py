"""Retry backoff without AWS: exponential, jittered, capped."""

import os
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from offload.retries import backoff_bounds, backoff_seconds
from offload.settings import Settings
from tests.support import ROOT, TEMPLATE


@pytest.fixture
def settings() -> Settings:
    return Settings(retry_base_seconds=2, retry_max_seconds=300)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 1, 2), (2, 2, 4), (3, 4, 8), (5, 16, 32), (9, 150, 300), (50, 150, 300)],
)
def test_backoff_grows_exponentially_with_equal_jitter(
    settings: Settings, attempt: int, low: int, high: int
) -> None:
    delays = {backoff_seconds(attempt, settings) for _ in range(200)}

    assert min(delays) >= low
    assert max(delays) <= high
    if high - low >= 4:
        assert len(delays) > 1, "jitter spreads the retries"


@pytest.mark.parametrize("attempt", [0, 1100, 10**6])
def test_backoff_stays_within_the_cap_for_any_receive_count(
    settings: Settings, attempt: int
) -> None:
    assert 0 <= backoff_seconds(attempt, settings) <= 300


def test_backoff_is_never_above_what_sqs_accepts() -> None:
    assert backoff_seconds(100, Settings(retry_max_seconds=43_200)) <= 43_200


# ------------------------------------------------------------------ riding out an outage

TEN_MINUTES = 600
WORKER_QUEUES = ("EmailQueue", "TaskQueue")


def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    return parsed


def resolved(value: Any, parameters: dict[str, Any]) -> Any:
    """A template value, with a `!Ref` to a parameter replaced by the parameter's default."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameters[value["Ref"]]["Default"]
    return value


def shortest_and_longest_wait(settings: Settings, max_receives: int) -> tuple[int, int]:
    """Backoff between the first receive and the last, at its shortest and at its longest."""
    bounds = [backoff_bounds(attempt, settings) for attempt in range(1, max_receives)]
    return sum(low for low, _ in bounds), sum(high for _, high in bounds)


@pytest.mark.parametrize("queue", WORKER_QUEUES)
def test_the_default_retries_ride_out_ten_minutes_of_failures(
    monkeypatch: pytest.MonkeyPatch, queue: str
) -> None:
    # Given the defaults as deployed: the settings' backoff and the queue's redrive policy
    for name in [n for n in os.environ if n.startswith("OFFLOAD_")]:
        monkeypatch.delenv(name)
    settings = Settings()
    parsed = template()
    parameters = parsed["Parameters"]
    properties = parsed["Resources"][queue]["Properties"]
    max_receives = int(resolved(properties["RedrivePolicy"]["maxReceiveCount"], parameters))
    variables = parsed["Globals"]["Function"]["Environment"]["Variables"]

    # Then the workers count receives as the queue does
    assert int(resolved(variables["OFFLOAD_MAX_RECEIVE_COUNT"], parameters)) == max_receives
    assert settings.max_receive_count == max_receives

    # And a task failing transiently on every receive is alive for at least ten minutes: the
    # backoffs before its last receive add up to that even when every jitter is at its shortest
    shortest, longest = shortest_and_longest_wait(settings, max_receives)
    assert shortest >= TEN_MINUTES, f"dead after {shortest} s of failures"

    # And SQS can hold it that long: each backoff is a visibility SQS accepts, and the message
    # outlives the whole wait
    assert settings.retry_max_seconds <= 43_200
    assert int(properties["MessageRetentionPeriod"]) > longest + max_receives * 180

    # And the README says how long, exactly
    readme = (ROOT / "README.md").read_text()
    assert f"{shortest} s" in readme and f"{longest} s" in readme, (shortest, longest)


def test_the_drawn_backoff_stays_within_its_bounds(settings: Settings) -> None:
    for attempt in (1, 2, 5, 9, 12):
        low, high = backoff_bounds(attempt, settings)
        delays = {backoff_seconds(attempt, settings) for _ in range(300)}
        assert low <= min(delays) and max(delays) <= high, attempt
