"""What ships and what guards it: the template's API auth and the functions' packages."""

import re
import subprocess
import sys
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from tests.support import ROOT, TEMPLATE

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


def test_no_iam_statement_allows_every_action() -> None:
    for name, function in resources_of("AWS::Serverless::Function").items():
        for policy in function["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                actions = statement["Action"]
                actions = actions if isinstance(actions, list) else [actions]
                assert not [a for a in actions if a == "*" or a.endswith(":*")], (name, statement)
                assert statement["Resource"] != "*", (name, statement)


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
