"""Task ids that prove their owner (offload.task_ids): what GET /tasks/{id} relies on while a
task has no record yet."""

from datetime import timedelta
from uuid import UUID, uuid4

import yaml

from offload.models import TaskState, unrecorded, utcnow
from offload.settings import Settings
from offload.task_ids import issued_at, issued_to, new_task_id
from tests.support import TEMPLATE


def test_an_id_is_issued_to_its_owner_alone_and_carries_its_issue_time() -> None:
    before = utcnow()
    task_id = new_task_id("alice")

    assert task_id.version == 8
    assert issued_to(task_id, "alice")
    assert not issued_to(task_id, "bob") and not issued_to(task_id, None)
    issued = issued_at(task_id)
    assert issued is not None and before - timedelta(milliseconds=1) <= issued <= utcnow()
    assert new_task_id("alice") != task_id


def test_an_id_moved_to_another_owner_or_altered_proves_nothing() -> None:
    task_id = new_task_id(None)
    assert issued_to(task_id, None)
    # Any one bit flipped outside the version and variant fields breaks the checksum.
    for bit in [*range(0, 62), *range(64, 76), *range(80, 128)]:
        assert not issued_to(UUID(int=task_id.int ^ (1 << bit)), None), bit
    # Ids made elsewhere never vouch for anyone.
    assert not any(issued_to(uuid4(), owner) for owner in (None, "alice"))
    assert issued_at(uuid4()) is None


def test_a_seeded_id_is_the_same_on_every_retry_and_has_no_issue_time() -> None:
    first = new_task_id("alice", seed=b"order-42\n0")

    assert first == new_task_id("alice", seed=b"order-42\n0")
    assert first != new_task_id("alice", seed=b"order-42\n1")
    assert first != new_task_id("bob", seed=b"order-42\n0")
    assert issued_to(first, "alice") and issued_at(first) is None


def test_an_unrecorded_task_reads_queued_to_its_owner_within_the_retention_only() -> None:
    task_id = new_task_id("alice")
    now = utcnow()
    day = 86_400

    record = unrecorded(task_id, "alice", now, day)
    assert record is not None and record.state is TaskState.QUEUED
    assert record.created_at == issued_at(task_id) and record.kind is None
    assert unrecorded(task_id, "bob", now, day) is None
    assert unrecorded(task_id, "alice", now + timedelta(seconds=day + 1), day) is None
    assert unrecorded(new_task_id("alice", seed=b"k"), "alice", now, day) is None
    assert unrecorded(uuid4(), "alice", now, day) is None


def test_the_retention_setting_is_the_task_queues_message_retention() -> None:
    class Template(yaml.SafeLoader):
        pass

    Template.add_multi_constructor("!", lambda loader, suffix, node: None)
    resources = yaml.load(TEMPLATE.read_text(), Template)["Resources"]
    retention = {
        name: r["Properties"]["MessageRetentionPeriod"]
        for name, r in resources.items()
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"]
    }
    assert retention and set(retention.values()) == {Settings().message_retention_seconds}
