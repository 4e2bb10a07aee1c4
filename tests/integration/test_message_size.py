"""Task messages up to 1 MiB travel in SQS itself (SQS's limit since January 2026); larger ones
go through the claim check. The queues of the template and the setting agree."""

from typing import Any

import pytest

from example_app.notifications import write_log
from offload.enqueue import TaskCall, enqueue
from offload.registry import definition_of
from tests.integration.test_reliability_worker import deliver, failures
from tests.support import AwsStack, installed, task_message
from tests.unit.test_deploy_security import translated
from workers.tasks import handler as tasks_handler

MIB = 1_048_576


def test_every_queue_takes_1_mib_and_the_claim_check_starts_above_it() -> None:
    cfn = translated()
    queues = {
        name: r["Properties"]
        for name, r in cfn["Resources"].items()
        if r["Type"] == "AWS::SQS::Queue"
    }
    assert queues and {p["MaximumMessageSize"] for p in queues.values()} == {MIB}
    variables = cfn["Resources"]["TaskWorker"]["Properties"]["Environment"]["Variables"]
    assert int(variables["OFFLOAD_MAX_MESSAGE_BYTES"]) == MIB


@pytest.mark.parametrize(("chars", "inline"), [(700_000, True), (1_100_000, False)])
def test_a_message_up_to_1_mib_travels_inline(aws: AwsStack, chars: int, inline: bool) -> None:
    # Given a task whose arguments are 700 KB (over the old 256 KiB limit) or over 1 MiB
    definition = definition_of(write_log)
    text = "x" * chars
    (message,) = enqueue(installed(), [TaskCall(definition, definition.payload(message=text))])

    # Then it is on the queue as it is, or as a pointer to the payload bucket
    (queued,) = aws.receive_all(aws.task_queue)
    body: Any = task_message(queued)
    assert (body.payload_ref is None) is inline
    assert len(queued["Body"]) > chars if inline else len(queued["Body"]) < 2_000

    # And the worker runs it either way
    assert failures(deliver(aws.task_queue, tasks_handler)) == []
    assert aws.task(message.task_id)["state"] == "succeeded"  # type: ignore[index]
