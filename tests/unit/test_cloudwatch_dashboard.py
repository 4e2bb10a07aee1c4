"""The CloudWatch dashboard in template.yaml shows only metrics that exist: AWS's own (AWS/SQS,
AWS/Lambda) on the template's queues and functions, and Offload's, as the code emits them
(metrics.add_metric names, the namespace the template sets, the dimensions the worker adds)."""

import json
import re
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from tests.support import ROOT, TEMPLATE

# The metrics AWS publishes that the dashboard may show.
AWS_METRICS = {
    "AWS/SQS": {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
        "ApproximateAgeOfOldestMessage",
        "NumberOfMessagesSent",
        "NumberOfMessagesReceived",
        "NumberOfMessagesDeleted",
        "NumberOfEmptyReceives",
        "SentMessageSize",
    },
    "AWS/Lambda": {
        "Invocations",
        "Errors",
        "Throttles",
        "Duration",
        "ConcurrentExecutions",
        "DeadLetterErrors",
    },
}
SUBSTITUTION = re.compile(r"\$\{([A-Za-z0-9:.]+)\}")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    return parsed


@pytest.fixture(scope="module")
def metrics(template: dict[str, Any]) -> list[tuple[str, str, dict[str, str], str]]:
    """Every metric the dashboard shows: (namespace, name, dimensions, statistic)."""
    [dashboard] = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body)["widgets"]
    found = []
    for widget in widgets:
        if widget["type"] != "metric":
            continue
        properties = widget["properties"]
        for entry in properties["metrics"]:
            options = entry[-1] if isinstance(entry[-1], dict) else {}
            names = [part for part in entry if not isinstance(part, dict)]
            assert "." not in names, f"write each metric in full, no '.' shorthand: {entry}"
            namespace, name, *pairs = names
            dimensions = dict(zip(pairs[::2], pairs[1::2], strict=True))
            found.append((namespace, name, dimensions, options.get("stat", properties["stat"])))
    return found


def emitted_names() -> set[str]:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "offload").rglob("*.py"))
    names = set(re.findall(r'add_metric\(\s*name="(\w+)"', source))
    assert names, "no metrics.add_metric(name=...) found in src/offload"
    return names


def emitted_dimensions() -> set[str]:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "offload").rglob("*.py"))
    # Powertools adds `service` (POWERTOOLS_SERVICE_NAME) to every metric.
    return {"service", *re.findall(r'add_dimension\(\s*name="(\w+)"', source)}


def worker_services(template: dict[str, Any]) -> dict[str, str]:
    """Each worker's service name → the queue its handler serves (sqs_handler("<queue>"))."""
    services = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        service = properties.get("Environment", {}).get("Variables", {})
        module = properties["Handler"].rpartition(".")[0]
        handler = (ROOT / "src" / (module.replace(".", "/") + ".py")).read_text()
        queue = re.search(r'sqs_handler\(\s*"(\w+)"', handler)
        if queue and "POWERTOOLS_SERVICE_NAME" in service:
            services[service["POWERTOOLS_SERVICE_NAME"]] = queue.group(1)
    return services


def resource_of(value: str, template: dict[str, Any], kind: str, attribute: str | None) -> str:
    """The logical id that `${Id}` or `${Id.Attribute}` names, checked to be of type `kind`."""
    match = SUBSTITUTION.fullmatch(value)
    assert match, f"{value}: name the resource with a substitution, not a literal"
    logical, _, got = match.group(1).partition(".")
    assert template["Resources"][logical]["Type"] == kind, value
    assert (got or None) == attribute, value
    return logical


def test_the_template_has_a_dashboard_with_every_kind_of_widget(
    metrics: list[tuple[str, str, dict[str, str], str]],
) -> None:
    shown = {(namespace, name) for namespace, name, _, _ in metrics}
    for wanted in [
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/Lambda", "Invocations"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/Lambda", "Duration"),
    ]:
        assert wanted in shown
    durations = {stat for _, name, _, stat in metrics if name == "Duration"}
    assert {"p50", "p99"} <= durations


def test_aws_metrics_are_real_and_name_the_templates_resources(
    template: dict[str, Any], metrics: list[tuple[str, str, dict[str, str], str]]
) -> None:
    queues, dlqs, functions = set(), set(), set()
    for namespace, name, dimensions, _ in metrics:
        if not namespace.startswith("AWS/"):
            continue
        assert name in AWS_METRICS.get(namespace, set()), f"{namespace} has no metric {name}"
        if namespace == "AWS/SQS":
            assert list(dimensions) == ["QueueName"]
            queues.add(
                resource_of(dimensions["QueueName"], template, "AWS::SQS::Queue", "QueueName")
            )
        else:
            assert list(dimensions) == ["FunctionName"]
            functions.add(
                resource_of(dimensions["FunctionName"], template, "AWS::Serverless::Function", None)
            )
    every_queue = {k for k, r in template["Resources"].items() if r["Type"] == "AWS::SQS::Queue"}
    dlqs = {q for q in every_queue if "DeadLetter" in q}
    assert queues == every_queue, "each queue and each DLQ is on the dashboard"
    assert dlqs
    workers = {
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
        and r["Properties"]["Handler"].startswith("workers.")
    }
    assert workers <= functions, "each worker is on the dashboard"


def test_offload_metrics_are_those_the_workers_emit(
    template: dict[str, Any], metrics: list[tuple[str, str, dict[str, str], str]]
) -> None:
    namespace = template["Globals"]["Function"]["Environment"]["Variables"][
        "POWERTOOLS_METRICS_NAMESPACE"
    ]
    names, dimensions, services = emitted_names(), emitted_dimensions(), worker_services(template)
    shown: set[str] = set()
    for each_namespace, name, each_dimensions, _ in metrics:
        if each_namespace.startswith("AWS/"):
            continue
        assert each_namespace == namespace, f"{name}: namespace {each_namespace}"
        assert name in names, f"the code emits no metric {name}"
        assert set(each_dimensions) == dimensions, f"{name}: dimensions {each_dimensions}"
        service = each_dimensions["service"]
        assert services.get(service) == each_dimensions["queue"], (
            f"{name}: no worker {service} serves queue {each_dimensions['queue']}"
        )
        shown.add(name)
    assert shown == names, f"emitted but not on the dashboard: {names - shown}"
    shown_per_queue = {(d["queue"], n) for ns, n, d, _ in metrics if ns == namespace}
    for queue in services.values():
        for name in ("TasksSucceeded", "TasksRetried", "TasksDead", "TaskDuration"):
            assert (queue, name) in shown_per_queue, f"{name} of queue {queue}"
