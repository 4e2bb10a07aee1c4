"""The template's EventBridge Scheduler resources, created in the embedded AWS.

moto has the Scheduler API but not its CloudFormation resources: the stack is created without
them (offload.local.stack), then each AWS::Scheduler::ScheduleGroup and AWS::Scheduler::Schedule
whose Condition holds is created with the API, its properties resolved against the stack
(Ref, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Join, Fn::Select, and the conditions' Fn::Equals,
Fn::Not, Fn::And, Fn::Or). The local scheduler (offload.local.scheduler) fires them.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3

SCHEDULER_PREFIX = "AWS::Scheduler::"
_SUB = re.compile(r"\$\{([^}!][^}]*)\}")


@dataclass
class Resolver:
    """Resolves the intrinsic functions of a template's values against a created stack."""

    parameters: dict[str, str]
    conditions: dict[str, Any]
    resources: dict[str, str]  # logical id → physical id
    types: dict[str, str]  # logical id → type
    pseudo: dict[str, str]  # AWS::StackName, AWS::Region, ...
    attribute: Callable[[str, str, str], str]  # (type, physical id, attribute) → value

    def ref(self, name: str) -> str:
        for names in (self.pseudo, self.parameters, self.resources):
            if name in names:
                return names[name]
        raise KeyError(f"cannot resolve Ref {name}")

    def get_att(self, name: str, attribute: str) -> str:
        return self.attribute(self.types[name], self.resources[name], attribute)

    def condition(self, name: str) -> bool:
        return bool(self.value(self.conditions[name]))

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.value(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return self.ref(name)

        return _SUB.sub(one, text)

    def value(self, value: Any) -> Any:
        """`value` with every intrinsic function in it resolved."""
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((function, argument),) = value.items()
            resolve = self._functions().get(function)
            if resolve is not None:
                return resolve(argument)
        return {key: self.value(inner) for key, inner in value.items()}

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        value = self.value
        return {
            "Ref": self.ref,
            "Fn::GetAtt": lambda a: self.get_att(*(a if isinstance(a, list) else a.split(".", 1))),
            "Fn::Sub": lambda a: self._sub(a, {}) if isinstance(a, str) else self._sub(*a),
            "Fn::If": lambda a: value(a[1] if self.condition(a[0]) else a[2]),
            "Fn::Join": lambda a: a[0].join(str(i) for i in value(a[1])),
            "Fn::Select": lambda a: value(a[1])[int(value(a[0]))],
            "Fn::Split": lambda a: str(value(a[1])).split(a[0]),
            "Fn::Equals": lambda a: str(value(a[0])) == str(value(a[1])),
            "Fn::Not": lambda a: not value(a[0]),
            "Fn::And": lambda a: all(value(a)),
            "Fn::Or": lambda a: any(value(a)),
            "Condition": self.condition,
        }


def scheduler_resources(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The template's AWS::Scheduler::* resources, by logical id."""
    return {
        name: resource
        for name, resource in cfn["Resources"].items()
        if resource["Type"].startswith(SCHEDULER_PREFIX)
    }


def _attribute(session: boto3.session.Session, endpoint: str | None) -> Callable[..., str]:
    sqs = session.client("sqs", endpoint_url=endpoint)
    iam = session.client("iam", endpoint_url=endpoint)

    def attribute(resource_type: str, physical: str, name: str) -> str:
        if resource_type == "AWS::SQS::Queue":
            wanted = {"Arn": "QueueArn", "QueueName": "QueueName"}[name]
            attributes = sqs.get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"])
            arn = str(attributes["Attributes"]["QueueArn"])
            return arn if wanted == "QueueArn" else arn.rsplit(":", 1)[-1]
        if resource_type == "AWS::IAM::Role" and name == "Arn":
            return str(iam.get_role(RoleName=physical)["Role"]["Arn"])
        raise KeyError(f"cannot resolve Fn::GetAtt {resource_type} {physical}.{name}")

    return attribute


def create_schedules(
    session: boto3.session.Session,
    endpoint: str | None,
    resources: dict[str, dict[str, Any]],
    resolver_of: Callable[[Callable[..., str]], Resolver],
) -> dict[str, str]:
    """Create the schedule groups, then the schedules, whose Condition holds. Returns the
    physical ids (group names, `group/name` of schedules) by logical id."""
    scheduler = session.client("scheduler", endpoint_url=endpoint)
    resolver = resolver_of(_attribute(session, endpoint))
    created: dict[str, str] = {}
    kept = {
        name: resource
        for name, resource in resources.items()
        if "Condition" not in resource or resolver.condition(resource["Condition"])
    }
    for name, resource in kept.items():
        if resource["Type"] == "AWS::Scheduler::ScheduleGroup":
            group = str(resolver.value(resource.get("Properties", {}).get("Name", name)))
            scheduler.create_schedule_group(Name=group)
            created[name] = resolver.resources[name] = group
    for name, resource in kept.items():
        if resource["Type"] != "AWS::Scheduler::Schedule":
            continue
        properties = resolver.value(resource["Properties"])
        schedule = properties.pop("Name", name)
        properties.pop("KmsKeyArn", None)
        group = properties.setdefault("GroupName", "default")
        scheduler.create_schedule(Name=schedule, **properties)
        created[name] = f"{group}/{schedule}"
    return created
