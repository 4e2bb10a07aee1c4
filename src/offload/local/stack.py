"""Provision the embedded AWS from template.yaml: SAM → CloudFormation (offline) → moto."""

import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from offload.local.schedules import (
    SCHEDULER_PREFIX,
    Resolver,
    create_schedules,
    scheduler_resources,
)

if TYPE_CHECKING:
    from mypy_boto3_lambda.type_defs import FunctionConfigurationResponseTypeDef

STACK_NAME = "offload-local"
ARTIFACT_BUCKET = "offload-local-artifacts"
ARTIFACT_KEY = "code.zip"
# The functions' configurations, kept beside the artifact for `offload invoke` (moto's Lambda
# functions are deleted once read: see provision).
FUNCTIONS_KEY = "functions.json"

# Resource types that moto's CloudFormation does not support (it would warn about each one):
# they are left out, and the runner stands in for the API and the triggers.
UNSUPPORTED_PREFIXES = (
    "AWS::ApiGatewayV2::",
    "AWS::SQS::QueuePolicy",
    "AWS::S3::BucketPolicy",
    "AWS::Lambda::Permission",
    "AWS::CloudWatch::Alarm",
    # moto has the Scheduler API, not its CloudFormation resources: created with the API.
    SCHEDULER_PREFIX,
)


class _NoManagedPolicies:
    """The template names no managed policies by name, so the translator needs none."""

    def load(self) -> dict[str, str]:
        return {}


@dataclass
class EventSource:
    """One SQS → Lambda trigger, as moto created it from the template."""

    function: str
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    queue_arn: str
    queue_url: str
    batch_size: int
    max_concurrency: int
    report_batch_item_failures: bool


@dataclass
class LocalStack:
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id → physical id
    functions: dict[str, "FunctionConfigurationResponseTypeDef"]  # logical id → configuration
    event_sources: list[EventSource] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # logical id → type, not created
    # Where each function's handler is imported from (its CodeUri): logical id → directory.
    code_dirs: dict[str, Path] = field(default_factory=dict)
    api_function: str | None = None  # the function behind the HTTP API, if any
    # The template's schedule groups and schedules, created with the Scheduler API: logical id
    # → group name, or `group/name` of a schedule.
    schedules: dict[str, str] = field(default_factory=dict)

    def environment(self, logical_id: str) -> dict[str, str]:
        env = self.functions[logical_id].get("Environment", {}).get("Variables", {})
        return {str(k): str(v) for k, v in env.items()}


def code_dirs(template_path: Path) -> dict[str, Path]:
    """Each function's code directory (logical id → path): its CodeUri, or the global one.

    The runner imports a function's handler from there, as Lambda imports it from the package
    that `sam build` makes of that directory.
    """
    sam = yaml_parse(template_path.read_text())
    default = sam.get("Globals", {}).get("Function", {}).get("CodeUri")
    found: dict[str, Path] = {}
    for logical, resource in sam["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        uri = resource.get("Properties", {}).get("CodeUri", default)
        if not isinstance(uri, str) or uri.startswith("s3://"):
            raise ValueError(
                f"{template_path}: {logical} needs a local CodeUri (a directory) to run locally"
            )
        found[str(logical)] = (template_path.parent / uri).resolve()
    return found


def http_api_function(template_path: Path) -> str | None:
    """The logical id of the function that serves the HTTP API (an HttpApi or Api event)."""
    sam = yaml_parse(template_path.read_text())
    for logical, resource in sam["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        events = resource.get("Properties", {}).get("Events") or {}
        if any(event.get("Type") in ("HttpApi", "Api") for event in events.values()):
            return str(logical)
    return None


def translate(template_path: Path, parameters: dict[str, str]) -> dict[str, Any]:
    """The SAM template as plain CloudFormation, as `sam package` + the SAM transform make it."""
    sam = yaml_parse(template_path.read_text())
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/{ARTIFACT_KEY}"
    globals_ = sam.get("Globals", {}).get("Function", {})
    if "CodeUri" in globals_:
        globals_["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/{ARTIFACT_KEY}"
    cfn: dict[str, Any] = transform(sam, parameters, _NoManagedPolicies())
    return cfn


def _mentions(value: Any, names: set[str]) -> bool:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and inner in names:
                return True
            if key == "Fn::GetAtt" and isinstance(inner, list) and inner[0] in names:
                return True
            if key == "Fn::Sub" and isinstance(inner, (str, list)):
                text = inner if isinstance(inner, str) else json.dumps(inner)
                if any("${" + name for name in names if "${" + name in text):
                    return True
            if _mentions(inner, names):
                return True
    elif isinstance(value, list):
        return any(_mentions(item, names) for item in value)
    return False


def strip_unsupported(cfn: dict[str, Any]) -> list[str]:
    """Remove what moto cannot create, and whatever refers to it. Returns the removed ids."""
    resources = cfn["Resources"]
    removed = {
        name
        for name, resource in resources.items()
        if resource["Type"].startswith(UNSUPPORTED_PREFIXES)
    }
    changed = True
    while changed:
        changed = False
        for name, resource in list(resources.items()):
            if name not in removed and _mentions(resource, removed):
                removed.add(name)
                changed = True
    for name in removed:
        resources.pop(name, None)
    for resource in resources.values():
        depends = resource.get("DependsOn")
        if isinstance(depends, list):
            resource["DependsOn"] = [d for d in depends if d not in removed]
        elif isinstance(depends, str) and depends in removed:
            del resource["DependsOn"]
    outputs = cfn.get("Outputs", {})
    for name in [n for n, out in outputs.items() if _mentions(out, removed)]:
        del outputs[name]
    return sorted(removed)


def bucket_notifications(cfn: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each bucket's SQS notifications (logical ids), which moto's CloudFormation ignores."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, resource in cfn["Resources"].items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        config = resource.get("Properties", {}).get("NotificationConfiguration", {})
        for queue in config.get("QueueConfigurations", []):
            target = queue["Queue"]
            if not (isinstance(target, dict) and "Fn::GetAtt" in target):
                raise ValueError(f"{name}: the local system needs Queue: !GetAtt <Queue>.Arn")
            rules = queue.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            found.setdefault(name, []).append(
                {
                    "queue": target["Fn::GetAtt"][0],
                    "events": [queue["Event"]],
                    "rules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules],
                }
            )
    return found


def apply_bucket_notifications(
    session: boto3.session.Session,
    endpoint: str | None,
    notifications: dict[str, list[dict[str, Any]]],
    resources: dict[str, str],
) -> None:
    """Set the template's bucket → queue notifications with the S3 API, as S3 would."""
    s3 = session.client("s3", endpoint_url=endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)
    for bucket, queues in notifications.items():
        configurations: list[Any] = []
        for queue in queues:
            arn = sqs.get_queue_attributes(
                QueueUrl=resources[queue["queue"]], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            configuration: dict[str, Any] = {"QueueArn": arn, "Events": queue["events"]}
            if queue["rules"]:
                configuration["Filter"] = {"Key": {"FilterRules": queue["rules"]}}
            configurations.append(configuration)
        s3.put_bucket_notification_configuration(
            Bucket=resources[bucket],
            NotificationConfiguration={"QueueConfigurations": configurations},
        )


def _code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "The local runner imports handlers from their CodeUri.\n")
    return buffer.getvalue()


def provision(endpoint: str, template_path: Path, parameters: dict[str, str]) -> LocalStack:
    """Create the stack in moto and read back what the runner needs."""
    session = boto3.session.Session()
    s3 = session.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    s3.put_object(Bucket=ARTIFACT_BUCKET, Key=ARTIFACT_KEY, Body=_code_zip())

    cfn_template = translate(template_path, parameters)
    types_before = {name: r["Type"] for name, r in cfn_template["Resources"].items()}
    schedulers = scheduler_resources(cfn_template)
    left_out = {
        name: types_before[name]
        for name in strip_unsupported(cfn_template)
        if name not in schedulers
    }
    notifications = bucket_notifications(cfn_template)
    cloudformation = session.client("cloudformation", endpoint_url=endpoint)
    cloudformation.create_stack(
        StackName=STACK_NAME,
        TemplateBody=json.dumps(cfn_template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + 60
    while True:
        stack = cloudformation.describe_stacks(StackName=STACK_NAME)["Stacks"][0]
        if stack["StackStatus"] == "CREATE_COMPLETE":
            break
        if stack["StackStatus"].endswith("FAILED") or time.monotonic() > deadline:
            events = cloudformation.describe_stack_events(StackName=STACK_NAME)["StackEvents"]
            reasons = [
                e.get("ResourceStatusReason", "") for e in events if "FAILED" in e["ResourceStatus"]
            ]
            raise RuntimeError(f"stack {stack['StackStatus']}: {reasons}")
        time.sleep(0.1)

    summaries = cloudformation.list_stack_resources(StackName=STACK_NAME)["StackResourceSummaries"]
    resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries}
    types = {r["LogicalResourceId"]: r["ResourceType"] for r in summaries}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    lambda_ = session.client("lambda", endpoint_url=endpoint)
    functions = {
        logical: lambda_.get_function_configuration(FunctionName=physical)
        for logical, physical in resources.items()
        if types[logical] == "AWS::Lambda::Function"
    }
    by_name = {config["FunctionName"]: logical for logical, config in functions.items()}
    sqs = session.client("sqs", endpoint_url=endpoint)
    stack_info = LocalStack(
        outputs=outputs,
        resources=resources,
        functions=functions,
        left_out=left_out,
        code_dirs=code_dirs(template_path),
        api_function=http_api_function(template_path),
    )
    apply_bucket_notifications(session, endpoint, notifications, resources)
    given = {
        name: str(spec.get("Default", ""))
        for name, spec in cfn_template.get("Parameters", {}).items()
    }
    given.update(parameters)
    stack_id = stack["StackId"]
    pseudo = {
        "AWS::StackName": STACK_NAME,
        "AWS::StackId": stack_id,
        "AWS::Region": session.region_name or stack_id.split(":")[3],
        "AWS::AccountId": stack_id.split(":")[4],
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    stack_info.schedules = create_schedules(
        session,
        endpoint,
        schedulers,
        lambda attribute: Resolver(
            given, cfn_template.get("Conditions", {}), resources, types, pseudo, attribute
        ),
    )
    for mapping in lambda_.list_event_source_mappings()["EventSourceMappings"]:
        # moto would "run" these itself on SendMessage and swallow the messages: the runner owns
        # polling, so the mappings are read, then disabled (moto's delete leaves them active).
        lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
        arn = mapping["EventSourceArn"]
        if ":sqs:" not in arn:
            continue
        logical = by_name[mapping["FunctionArn"].split(":")[-1]]
        config = functions[logical]
        queue_name = arn.split(":")[-1]
        stack_info.event_sources.append(
            EventSource(
                function=logical,
                handler=config["Handler"],
                timeout=int(config.get("Timeout", 3)),
                memory=int(config.get("MemorySize", 128)),
                environment=stack_info.environment(logical),
                queue_arn=arn,
                queue_url=sqs.get_queue_url(QueueName=queue_name)["QueueUrl"],
                batch_size=int(mapping.get("BatchSize", 10)),
                max_concurrency=int(
                    (mapping.get("ScalingConfig") or {}).get("MaximumConcurrency", 1000)
                ),
                report_batch_item_failures="ReportBatchItemFailures"
                in mapping.get("FunctionResponseTypes", []),
            )
        )
    s3.put_object(
        Bucket=ARTIFACT_BUCKET, Key=FUNCTIONS_KEY, Body=json.dumps(functions, default=str)
    )
    # moto cannot run these functions without Docker, and its /moto-api/data.json fails while it
    # holds any; the runner has read their configuration and plays Lambda itself.
    for config in functions.values():
        lambda_.delete_function(FunctionName=config["FunctionName"])
    return stack_info


def provisioned_functions(
    endpoint: str,
) -> "dict[str, FunctionConfigurationResponseTypeDef] | None":
    """The functions' configurations (logical id → configuration, environment resolved) of the
    stack that a running embedded AWS holds; None when nothing there was provisioned."""
    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint)
    try:
        body = s3.get_object(Bucket=ARTIFACT_BUCKET, Key=FUNCTIONS_KEY)["Body"].read()
    except (BotoCoreError, ClientError):
        return None
    functions: dict[str, FunctionConfigurationResponseTypeDef] = json.loads(body)
    return functions
