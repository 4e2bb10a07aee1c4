"""When a task given a delay or a time runs, and how it gets there (offload.scheduling)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from offload.aws.scheduler import at_expression
from offload.scheduling import MAX_AHEAD, TooFarAheadError, plan, run_at_of

NOW = datetime(2026, 12, 1, 8, 0, 0, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (timedelta(seconds=5), NOW + timedelta(seconds=5)),
        (timedelta(seconds=-5), NOW),
        (NOW - timedelta(days=3), NOW),
        (
            datetime(2026, 12, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        ),
        (MAX_AHEAD, NOW + MAX_AHEAD),
    ],
)
def test_run_at(when: timedelta | datetime, expected: datetime) -> None:
    assert run_at_of(when, NOW) == expected


def test_more_than_a_year_ahead_and_naive_times_are_refused() -> None:
    with pytest.raises(TooFarAheadError):
        run_at_of(MAX_AHEAD + timedelta(seconds=1), NOW)
    with pytest.raises(ValueError, match="aware"):
        run_at_of(datetime(2026, 12, 24, 18, 0), NOW)


@pytest.mark.parametrize(
    ("ahead", "delay", "scheduled"),
    [
        (timedelta(0), 0, False),
        (timedelta(seconds=2.1), 3, False),
        (timedelta(minutes=15), 900, False),
        (timedelta(minutes=15, seconds=1), 0, True),
        (timedelta(days=300), 0, True),
    ],
)
def test_up_to_15_minutes_a_delayed_message_beyond_a_schedule(
    ahead: timedelta, delay: int, scheduled: bool
) -> None:
    how = plan(NOW + ahead, NOW)
    assert (how.delay_seconds, how.scheduled, how.run_at) == (delay, scheduled, NOW + ahead)


def test_a_schedule_never_fires_before_run_at() -> None:
    assert at_expression(NOW) == "at(2026-12-01T08:00:01)"
    assert at_expression(NOW.replace(microsecond=0)) == "at(2026-12-01T08:00:00)"
    paris = datetime(2026, 12, 24, 18, 0, tzinfo=timezone(timedelta(hours=1)))
    assert at_expression(paris) == "at(2026-12-24T17:00:00)"
