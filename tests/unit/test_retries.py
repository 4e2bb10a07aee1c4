"""Retry backoff without AWS: exponential, jittered, capped."""

from collections.abc import Iterator

import pytest

from offload.retries import backoff_seconds
from offload.settings import get_settings


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OFFLOAD_RETRY_BASE_SECONDS", "2")
    monkeypatch.setenv("OFFLOAD_RETRY_MAX_SECONDS", "300")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 1, 2), (2, 2, 4), (3, 4, 8), (5, 16, 32), (9, 150, 300), (50, 150, 300)],
)
def test_backoff_grows_exponentially_with_equal_jitter(
    settings: None, attempt: int, low: int, high: int
) -> None:
    delays = {backoff_seconds(attempt) for _ in range(200)}

    assert min(delays) >= low
    assert max(delays) <= high
    if high - low >= 4:
        assert len(delays) > 1, "jitter spreads the retries"


@pytest.mark.parametrize("attempt", [0, 1100, 10**6])
def test_backoff_stays_within_the_cap_for_any_receive_count(settings: None, attempt: int) -> None:
    assert 0 <= backoff_seconds(attempt) <= 300


def test_backoff_is_never_above_what_sqs_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_RETRY_MAX_SECONDS", "43200")
    get_settings.cache_clear()
    try:
        assert backoff_seconds(100) <= 43_200
    finally:
        get_settings.cache_clear()
