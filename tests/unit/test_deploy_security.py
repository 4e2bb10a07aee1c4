"""What ships and what guards it: the template's API auth and the functions' packages."""

import json
import re
import subprocess
import sys
from functools import cache
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from offload.fastapi import CORRELATION_HEADER
from offload.idempotency_keys import HEADER as IDEMPOTENCY_HEADER
from tests.support import REGION, ROOT, STACK_PARAMETERS, TEMPLATE

WEB_FRAMEWORK = {"fastapi", "starlette", "mangum"}
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil"}


def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    return parsed


def http_api_routes() -> dict[str, dict[str, Any]]:
    routes = {}
    for resource in template()["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for name, event in resource["Properties"].get("Events", {}).items():
            if event["Type"] == "HttpApi":
                routes[name] = event["Properties"]
    return routes


def test_only_health_is_open_and_every_other_route_needs_a_jwt_with_a_scope() -> None:
    api = template()["Resources"]["HttpApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "Jwt"
    routes = http_api_routes()
    assert routes["Health"]["Auth"] == {"Authorizer": "NONE"}
    others = {name: route for name, route in routes.items() if name != "Health"}
    assert others, "no API routes"
    for name, route in others.items():
        assert route["Method"] != "ANY", f"{name}: ANY would demand a token for CORS preflights"
        assert route["Auth"]["Authorizer"] == "Jwt", name
        assert route["Auth"]["AuthorizationScopes"], name


def test_prod_refuses_a_wildcard_cors_origin_and_the_placeholder_issuer() -> None:
    rules = template()["Rules"]
    cors = rules["ProdCorsIsExplicit"]
    assert cors["RuleCondition"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}
    assert cors["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Contains": [{"Ref": "AllowedOrigins"}, "*"]}]
    }
    issuer = rules["ProdHasARealIssuer"]["Assertions"][0]["Assert"]
    placeholder = template()["Parameters"]["JwtIssuer"]["Default"]
    assert issuer == {"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtIssuer"}, placeholder]}]}


def test_every_log_group_has_a_retention() -> None:
    groups = {
        name: resource
        for name, resource in template()["Resources"].items()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }
    assert "HttpApiAccessLogs" in groups
    for name, group in groups.items():
        assert "RetentionInDays" in group["Properties"], name


def resources_of(kind: str) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in template()["Resources"].items() if r["Type"] == kind}


def test_every_dlq_every_queue_and_every_worker_has_its_alarms() -> None:
    alarms = resources_of("AWS::CloudWatch::Alarm").values()
    # (metric, logical id of the queue or function it watches)
    watched = set()
    for alarm in alarms:
        value = alarm["Properties"]["Dimensions"][0]["Value"]
        target = value["Fn::GetAtt"][0] if "Fn::GetAtt" in value else value["Ref"]
        watched.add((alarm["Properties"]["MetricName"], target))
    queues = resources_of("AWS::SQS::Queue")
    for name, queue in queues.items():
        if "RedrivePolicy" in queue["Properties"]:
            dlq = queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert ("ApproximateAgeOfOldestMessage", name) in watched, name
            assert ("ApproximateNumberOfMessagesVisible", dlq) in watched, dlq
    workers = [
        n
        for n, f in resources_of("AWS::Serverless::Function").items()
        if any(e["Type"] == "SQS" for e in f["Properties"].get("Events", {}).values())
    ]
    assert workers
    for worker in workers:
        assert {("Errors", worker), ("Throttles", worker)} <= watched, worker
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def locked(name: str) -> set[str]:
    text = (ROOT / "src" / "requirements" / f"{name}.txt").read_text()
    return {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", text, re.M)}


def test_function_locks_leave_out_the_runtime_sdk_and_workers_leave_out_fastapi() -> None:
    api, worker = locked("api"), locked("worker")

    assert api >= WEB_FRAMEWORK
    assert not WEB_FRAMEWORK & worker
    assert not RUNTIME_PROVIDED & (api | worker)


@pytest.mark.parametrize("module", ["workers.email", "workers.tasks", "workers.upload"])
def test_a_worker_handler_imports_no_web_framework(module: str) -> None:
    # In a fresh interpreter, as on a cold start: the worker package has no FastAPI to import.
    code = (
        f"import sys, {module}; "
        f"print(sorted(m for m in {sorted(WEB_FRAMEWORK)!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ least privilege, as deployed

# xray:PutTraceSegments and xray:PutTelemetryRecords have no resource-level permissions: AWS
# requires Resource "*" for them. They are the only actions allowed on "*".
X_RAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
SQS_POLLING = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
LOG_WRITING = {"logs:CreateLogStream", "logs:PutLogEvents"}


@cache
def _translated() -> str:
    """The template as the SAM transform deploys it (offline), as JSON text."""
    from offload.local.stack import translate

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)  # the translator needs a region
        return json.dumps(translate(TEMPLATE, STACK_PARAMETERS))


def translated() -> dict[str, Any]:
    """A fresh copy of the translated template."""
    cfn: dict[str, Any] = json.loads(_translated())
    return cfn


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(cfn: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every Allow statement a role gets: its inline policies and policies attached to it."""
    resources = cfn["Resources"]
    documents = [p["PolicyDocument"] for p in resources[role]["Properties"].get("Policies", [])]
    for resource in resources.values():
        attached = as_list(resource.get("Properties", {}).get("Roles", []))
        if resource["Type"].startswith("AWS::IAM::") and {"Ref": role} in attached:
            documents.append(resource["Properties"]["PolicyDocument"])
    return [s for document in documents for s in as_list(document["Statement"])]


def function_roles(cfn: dict[str, Any]) -> dict[str, str]:
    """Lambda function logical id → its role's logical id (a role of this template)."""
    roles = {}
    for name, resource in cfn["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            role = resource["Properties"]["Role"]
            assert "Fn::GetAtt" in role, (name, role)
            roles[name] = role["Fn::GetAtt"][0]
    return roles


def allowed(statements: list[dict[str, Any]], resource: Any) -> set[str]:
    """The actions the statements allow on exactly `resource`."""
    return {
        action
        for s in statements
        if s["Effect"] == "Allow" and resource in as_list(s["Resource"])
        for action in as_list(s["Action"])
    }


def test_no_role_has_a_managed_policy_and_no_resource_is_a_wildcard_but_x_ray() -> None:
    # Given the template as deployed (SAM adds managed policies to the roles it generates)
    cfn = translated()
    roles = [n for n, r in cfn["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    assert roles

    for role in roles:
        # Then no role carries a managed policy (AWSLambdaSQSQueueExecutionRole would allow
        # every queue of the account, AWSLambdaBasicExecutionRole every log group)
        assert not cfn["Resources"][role]["Properties"].get("ManagedPolicyArns"), role
        for statement in role_statements(cfn, role):
            assert statement["Effect"] == "Allow", (role, statement)
            assert "NotAction" not in statement and "NotResource" not in statement, role
            actions = set(as_list(statement["Action"]))
            assert not [a for a in actions if a == "*" or a.endswith(":*")], (role, statement)
            for resource in as_list(statement["Resource"]):
                if resource == "*":
                    # And "*" only for what X-Ray requires
                    assert actions <= X_RAY_ACTIONS, (role, statement)
                else:
                    # Every other resource names one of the stack's own resources
                    assert isinstance(resource, dict), (role, statement)


def test_each_function_has_its_own_role_that_names_its_log_group_and_its_queue() -> None:
    cfn = translated()
    resources = cfn["Resources"]
    roles = function_roles(cfn)
    assert set(roles) == {"ApiFunction", "TaskWorker", "EmailWorker", "UploadWorker"}
    assert len(set(roles.values())) == len(roles), f"functions share a role: {roles}"

    for function, role in roles.items():
        properties = resources[function]["Properties"]
        statements = role_statements(cfn, role)
        # Its logs go to its own log group, which has a retention, and only there
        group = properties["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup", function
        assert "RetentionInDays" in resources[group]["Properties"], group
        assert allowed(statements, {"Fn::GetAtt": [group, "Arn"]}) >= LOG_WRITING, function
        log_statements = [s for s in statements if set(as_list(s["Action"])) & LOG_WRITING]
        assert [s["Resource"] for s in log_statements] == [{"Fn::GetAtt": [group, "Arn"]}]
        # And it may write traces, since tracing is on
        assert properties["TracingConfig"]["Mode"] == "Active"
        assert allowed(statements, "*") == X_RAY_ACTIONS, function

    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 3
    for mapping in mappings:
        # Each trigger's function may poll exactly its own queue
        function = mapping["Properties"]["FunctionName"]["Ref"]
        queue = mapping["Properties"]["EventSourceArn"]
        statements = role_statements(cfn, roles[function])
        assert allowed(statements, queue) >= SQS_POLLING, function
        polled = {
            str(resource)
            for s in statements
            if set(as_list(s["Action"])) & {"sqs:ReceiveMessage", "sqs:DeleteMessage"}
            for resource in as_list(s["Resource"])
        }
        assert polled == {str(queue)}, function


def test_every_worker_writes_task_records_only_and_may_import_its_tasks() -> None:
    # Given the template as deployed, and its SQS-triggered workers
    cfn = translated()
    resources = cfn["Resources"]
    roles = function_roles(cfn)
    workers = {
        r["Properties"]["FunctionName"]["Ref"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert workers == {"TaskWorker", "EmailWorker", "UploadWorker"}

    for worker in workers:
        # Then each claims and records its tasks by conditional updates of their records, and
        # keeps no other run-once record: no access to the IdempotencyTable, nor its name
        statements = role_statements(cfn, roles[worker])
        assert allowed(statements, {"Fn::GetAtt": ["TasksTable", "Arn"]}) == {
            "dynamodb:UpdateItem"
        }, worker
        assert allowed(statements, {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}) == set(), worker
        variables = resources[worker]["Properties"]["Environment"]["Variables"]
        assert "OFFLOAD_IDEMPOTENCY_TABLE" not in variables, worker

    # And the UploadWorker may import the module of its one task
    from example_app.uploads.tasks import process_upload

    variables = resources["UploadWorker"]["Properties"]["Environment"]["Variables"]
    assert process_upload.__module__ in variables["OFFLOAD_TASK_MODULES"].split(",")


# ------------------------------------------------------------------ CORS


def test_browsers_may_send_idempotency_key_and_read_the_correlation_id_and_location() -> None:
    # Given the HTTP API as deployed
    apis = [r for r in translated()["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    assert len(apis) == 1
    cors = apis[0]["Properties"]["Body"]["x-amazon-apigateway-cors"]

    # Then a browser may send the headers the API reads, and read the ones it answers with
    allow = {h.lower() for h in cors["allowHeaders"]}
    expose = {h.lower() for h in cors.get("exposeHeaders", [])}
    assert {"authorization", "content-type", IDEMPOTENCY_HEADER.lower()} <= allow
    assert CORRELATION_HEADER.lower() in allow
    assert {CORRELATION_HEADER.lower(), "location"} <= expose


def test_snapstart_is_an_option_of_the_api_function_off_by_default() -> None:
    # Given the template as SAM deploys it
    cfn = translated()
    resources = cfn["Resources"]
    # Then ApiSnapStart ("false" by default) decides whether published versions are snapshotted
    assert cfn["Parameters"]["ApiSnapStart"]["Default"] == "false"
    assert cfn["Conditions"]["ApiSnapStartOn"] == {"Fn::Equals": [{"Ref": "ApiSnapStart"}, "true"]}
    assert resources["ApiFunction"]["Properties"]["SnapStart"] == {
        "ApplyOn": {"Fn::If": ["ApiSnapStartOn", "PublishedVersions", "None"]}
    }
    # And the HTTP API invokes the published alias (SnapStart never applies to $LATEST)
    aliases = [n for n, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"]
    assert aliases == ["ApiFunctionAliaslive"]
    api_permissions = [
        r["Properties"]["FunctionName"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    assert api_permissions and all(p == {"Ref": "ApiFunctionAliaslive"} for p in api_permissions)
    # And nothing SnapStart excludes is configured on it
    properties = resources["ApiFunction"]["Properties"]
    assert "FileSystemConfigs" not in properties
    assert properties.get("EphemeralStorage", {"Size": 512})["Size"] <= 512
    provisioned = [
        r for r in resources.values() if "ProvisionedConcurrencyConfig" in r.get("Properties", {})
    ]
    assert provisioned == []
