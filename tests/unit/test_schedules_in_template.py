"""Every recurring schedule in template.yaml sends a task message that a worker would run: a
registered task, with arguments its own validation accepts, to the queue of that task."""

from datetime import UTC, datetime

import pytest
from samtranslator.yaml_helper import yaml_parse

from offload.models import TaskMessage
from offload.queues import QUEUES
from offload.registry import get_task
from offload.scheduling import firing_task_id
from tests.support import TEMPLATE, fired

TEMPLATE_DATA = yaml_parse(TEMPLATE.read_text())
SCHEDULES = {
    name: resource["Properties"]
    for name, resource in TEMPLATE_DATA["Resources"].items()
    if resource["Type"] == "AWS::Scheduler::Schedule"
}
# The queues by logical id (TaskQueue, ...), from the stack outputs that name them.
QUEUE_OF_RESOURCE = {q.url_output.removesuffix("Url"): q.name for q in QUEUES}


def test_the_template_ships_the_dev_heartbeat() -> None:
    heartbeat = TEMPLATE_DATA["Resources"]["HeartbeatSchedule"]
    assert heartbeat["Condition"] == "IsDev"
    assert TEMPLATE_DATA["Conditions"]["IsDev"] == {"Fn::Equals": [{"Ref": "Stage"}, "dev"]}
    assert heartbeat["Properties"]["ScheduleExpression"] == "rate(1 minute)"


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_schedule_sends_a_valid_call_of_a_registered_task_to_its_queue(name: str) -> None:
    properties = SCHEDULES[name]
    modules = TEMPLATE_DATA["Globals"]["Function"]["Environment"]["Variables"][
        "OFFLOAD_TASK_MODULES"
    ]

    message = TaskMessage.model_validate_json(fired(properties))
    definition = get_task(message.kind, modules)

    # The registry's own validation of the arguments (InvalidTaskArgumentsError if wrong)
    assert definition.payload(**message.payload) == message.payload
    # Sent to the queue whose worker runs that task, by the scheduler's role, dead-lettered
    target = properties["Target"]
    assert QUEUE_OF_RESOURCE[target["Arn"]["Fn::GetAtt"][0]] == definition.queue
    assert target["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["SchedulerDeadLetterQueue", "Arn"]}
    assert properties["GroupName"] == {"Ref": "TaskScheduleGroup"}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_firing_is_a_task_of_its_own_and_a_redelivery_is_the_same_task(name: str) -> None:
    first = TaskMessage.model_validate_json(fired(SCHEDULES[name], "2026-12-01T08:00:00Z"))
    again = TaskMessage.model_validate_json(fired(SCHEDULES[name], "2026-12-01T08:00:00Z"))
    next_one = TaskMessage.model_validate_json(fired(SCHEDULES[name], "2026-12-01T08:01:00Z"))

    assert first.task_id == again.task_id != next_one.task_id
    assert first.schedule is not None
    assert first.task_id == firing_task_id(first.schedule)
    assert first.enqueued_at == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_the_scheduler_role_may_only_send_to_the_task_queues_and_its_dlq() -> None:
    role = TEMPLATE_DATA["Resources"]["SchedulerRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
    assert all("aws:SourceAccount" in s["Condition"]["StringEquals"] for s in trust)
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert {a for s in statements for a in s["Action"]} == {"sqs:SendMessage"}
    resources = [
        r
        for s in statements
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    assert sorted(r["Fn::GetAtt"][0] for r in resources) == [
        "EmailQueue",
        "SchedulerDeadLetterQueue",
        "TaskQueue",
    ]
