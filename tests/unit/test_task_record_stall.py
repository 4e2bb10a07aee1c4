"""TaskRecord.as_of: a claim on the last receive whose worker can no longer be running is dead."""

from datetime import timedelta
from uuid import uuid4

import pytest

from offload.models import TaskRecord, TaskState, utcnow

NOW = utcnow()


def claim(attempts: int, lease_left: float | None, error: str | None = None) -> TaskRecord:
    lease = None if lease_left is None else NOW + timedelta(seconds=lease_left)
    return TaskRecord(
        task_id=uuid4(),
        kind="write_log",
        state=TaskState.RUNNING,
        attempts=attempts,
        created_at=NOW,
        updated_at=NOW,
        error=error,
        lease_expires_at=lease,
    )


def test_a_claim_on_the_last_receive_past_its_lease_is_dead_with_the_reason() -> None:
    record = claim(5, -1, error="TransientTaskError: Throttling").as_of(NOW, 5)

    assert record.state is TaskState.DEAD
    assert record.error is not None
    assert "worker stopped" in record.error and "last attempt (5 of 5)" in record.error
    assert "the attempt before failed: TransientTaskError: Throttling" in record.error


@pytest.mark.parametrize(
    ("attempts", "lease_left"),
    [(5, 1), (4, -1), (5, None)],
    ids=["its worker may still run", "not the last receive", "no lease recorded"],
)
def test_other_claims_stay_running(attempts: int, lease_left: float | None) -> None:
    record = claim(attempts, lease_left)

    assert record.as_of(NOW, 5) == record
