"""TasksTable.list: a caller's tasks (or every task), newest first, page by page, through the
table's listing indexes in moto."""

from uuid import UUID

import pytest

from offload.aws.tasks_table import MAX_LIST_LIMIT, InvalidCursorError
from offload.models import TaskState
from offload.wiring import Offload
from tests.support import AwsStack, owned_task

ALICE = "alice-sub"
BOB = "bob-sub"


def record(offload: Offload, owner: str | None, state: TaskState = TaskState.RUNNING) -> UUID:
    return owned_task(offload, owner, state)


def every_page(
    offload: Offload, owner: str | None, limit: int, **filters: object
) -> list[list[UUID]]:
    pages: list[list[UUID]] = []
    cursor = None
    while True:
        records, cursor = offload.tasks.list(owner, limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([r.task_id for r in records])
        if cursor is None:
            return pages


def test_a_caller_pages_through_its_own_tasks_newest_first(aws: AwsStack, offload: Offload) -> None:
    # Given 7 tasks of Alice's, interleaved with Bob's and with tasks without an owner
    alices = []
    for _ in range(7):
        alices.append(record(offload, ALICE))
        record(offload, BOB)
        record(offload, None)

    # When Alice lists them 3 at a time
    pages = every_page(offload, ALICE, limit=3)

    # Then she gets hers only, newest first, in pages of 3, 3 and 1
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [task for page in pages for task in page] == list(reversed(alices))


def test_without_an_owner_the_listing_holds_the_tasks_without_one(
    aws: AwsStack, offload: Offload
) -> None:
    made = [record(offload, owner) for owner in (None, ALICE, None, BOB, None)]

    pages = every_page(offload, None, limit=2)

    # Every task of an API without callers' identities; never a caller's own
    assert [len(page) for page in pages] == [2, 1]
    assert [task for page in pages for task in page] == list(reversed(made[::2]))


def test_filters_by_state_and_kind(aws: AwsStack, offload: Offload) -> None:
    running = record(offload, ALICE)
    done = record(offload, ALICE, TaskState.SUCCEEDED)
    other_kind = owned_task(offload, ALICE, TaskState.SUCCEEDED, kind="send_email")

    by_state = every_page(offload, ALICE, 1, state=TaskState.SUCCEEDED)
    by_kind = every_page(offload, ALICE, 50, kind="write_log")
    succeeded = [t for page in by_state for t in page]
    logs = [t for page in by_kind for t in page]

    assert succeeded == [other_kind, done]
    assert logs == [done, running]


NOT_CURSORS = ["", "x" * 600, "bm90IGpzb24", "eyJ0IjogMX0", "eyJ0IjogIngiLCAiaSI6ICJ5In0"]


@pytest.mark.parametrize("cursor", NOT_CURSORS)
def test_a_cursor_it_did_not_hand_out_is_refused(
    aws: AwsStack, offload: Offload, cursor: str
) -> None:
    with pytest.raises(InvalidCursorError):
        offload.tasks.list(ALICE, cursor=cursor)


def test_the_limit_is_bounded(aws: AwsStack, offload: Offload) -> None:
    for _ in range(3):
        record(offload, ALICE)
    records, _ = offload.tasks.list(ALICE, limit=MAX_LIST_LIMIT * 10)
    assert len(records) == 3


def test_a_caller_without_an_identity_is_not_listed_what_it_may_not_read(
    aws: AwsStack, offload: Offload
) -> None:
    # Given an upload of Alice's, recorded from its S3 event (no owner; its id was issued to her)
    from offload.task_ids import new_task_id

    upload = owned_task(offload, None, task_id=new_task_id(ALICE))
    anyones = record(offload, None)

    # When a caller without an identity lists the tasks, it gets only what it may read
    listed = [task for page in every_page(offload, None, limit=10) for task in page]
    assert listed == [anyones]
    assert offload.tasks.get(upload) is not None
