"""The local system's Lambda stand-ins: SQS event shape, batch failures, template stripping."""

import hashlib
from pathlib import Path
from typing import Any

import pytest

from offload.local.lambda_runtime import LambdaContext, load_handler, sqs_event
from offload.local.poller import failed_message_ids
from offload.local.stack import code_dirs, strip_unsupported
from tests.support import load_event

IDS = ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("response", "report", "failed"),
    [
        ({"batchItemFailures": []}, True, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, True, {"m2"}),
        (
            {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]},
            True,
            {"m1", "m3"},
        ),
        # Lambda fails the whole batch on an identifier it does not know, or an empty one.
        ({"batchItemFailures": [{"itemIdentifier": "nope"}]}, True, set(IDS)),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, True, set(IDS)),
        ({"batchItemFailures": [{}]}, True, set(IDS)),
        # No ReportBatchItemFailures on the trigger: the response is ignored.
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, False, set()),
        (None, True, set()),
        ("ok", True, set()),
    ],
)
def test_failed_message_ids(response: Any, report: bool, failed: set[str]) -> None:
    assert failed_message_ids(response, IDS, report) == failed


def boto3_message(body: str, **attributes: str) -> dict[str, Any]:
    """A message as boto3's receive_message returns it."""
    return {
        "MessageId": "8f1c7b0e-2c55-4c3a-9f2a-6d6c1b0e9a11",
        "ReceiptHandle": "AQEBexample==",
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "Body": body,
        "Attributes": {
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1764022212478",
            "ApproximateReceiveCount": "3",
            "SentTimestamp": "1764022212455",
            "SqsManagedSseEnabled": "true",
        },
        "MD5OfMessageAttributes": "0123456789abcdef0123456789abcdef",
        "MessageAttributes": {
            name: {"StringValue": value, "DataType": "String"} for name, value in attributes.items()
        },
    }


def test_sqs_event_has_the_shape_lambda_sends() -> None:
    # Given a message as SQS returns it
    message = boto3_message('{"kind": "write_log"}', task_id="t-1", kind="write_log")

    # When it is wrapped the way Lambda's SQS trigger does
    event = sqs_event([message], "arn:aws:sqs:eu-west-1:123456789012:offload-dev-TaskQueue-X")  # type: ignore[list-item]

    # Then the record has exactly the keys of the sample event from AWS (events/)
    [record] = event["Records"]
    sample = load_event("sqs-task-worker.json")["Records"][0]
    assert set(record) == set(sample)
    assert record["messageId"] == message["MessageId"]
    assert record["receiptHandle"] == "AQEBexample=="
    assert record["body"] == '{"kind": "write_log"}'
    assert record["md5OfBody"] == message["MD5OfBody"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":offload-dev-TaskQueue-X")
    assert record["awsRegion"] == "eu-west-1"
    # Only the system attributes Lambda passes on, as strings
    assert record["attributes"] == {
        "ApproximateReceiveCount": "3",
        "SentTimestamp": "1764022212455",
        "SenderId": "AIDAEXAMPLE",
        "ApproximateFirstReceiveTimestamp": "1764022212478",
    }
    assert record["messageAttributes"]["task_id"] == {
        "stringValue": "t-1",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }


def test_sqs_event_without_message_attributes() -> None:
    message = boto3_message("plain")
    del message["MD5OfMessageAttributes"]

    [record] = sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q")["Records"]  # type: ignore[list-item]

    assert record["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in record


def test_sample_sqs_events_match_what_the_poller_builds() -> None:
    for name in ("sqs-task-worker.json", "sqs-email-worker.json"):
        for record in load_event(name)["Records"]:
            assert record["eventSource"] == "aws:sqs"
            assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
            assert record["attributes"]["ApproximateReceiveCount"] == "1"
            assert record["awsRegion"] == record["eventSourceARN"].split(":")[3]


def test_lambda_context_counts_down() -> None:
    context = LambdaContext("offload-dev-TaskWorker", timeout_seconds=30)

    assert 29_000 < context.get_remaining_time_in_millis() <= 30_000
    assert context.invoked_function_arn.endswith(":function:offload-dev-TaskWorker")


def test_load_handler_uses_the_template_handler_string() -> None:
    from workers import tasks

    assert load_handler("workers.tasks.handler") is tasks.handler


def test_strip_unsupported_removes_what_moto_lacks_and_what_refers_to_it() -> None:
    cfn: dict[str, Any] = {
        "Resources": {
            "HttpApi": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {}},
            "Stage": {
                "Type": "AWS::ApiGatewayV2::Stage",
                "Properties": {"ApiId": {"Ref": "HttpApi"}},
            },
            "Permission": {
                "Type": "AWS::Lambda::Permission",
                "Properties": {"SourceArn": {"Fn::Sub": "arn:aws:execute-api:${HttpApi}/*"}},
            },
            "QueuePolicy": {"Type": "AWS::SQS::QueuePolicy", "Properties": {}},
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "Function": {
                "Type": "AWS::Lambda::Function",
                "DependsOn": ["Stage", "Queue"],
                "Properties": {"Environment": {"Variables": {"Q": {"Ref": "Queue"}}}},
            },
            "Other": {"Type": "AWS::SNS::Topic", "DependsOn": "QueuePolicy", "Properties": {}},
        },
        "Outputs": {
            "ApiUrl": {"Value": {"Fn::Sub": "https://${HttpApi}.execute-api"}},
            "QueueUrl": {"Value": {"Ref": "Queue"}},
        },
    }

    removed = strip_unsupported(cfn)

    assert removed == ["HttpApi", "Permission", "QueuePolicy", "Stage"]
    assert set(cfn["Resources"]) == {"Queue", "Function", "Other"}
    assert cfn["Resources"]["Function"]["DependsOn"] == ["Queue"]
    assert "DependsOn" not in cfn["Resources"]["Other"]
    assert set(cfn["Outputs"]) == {"QueueUrl"}


def test_each_function_imports_from_its_own_code_uri_or_the_global_one(tmp_path: Path) -> None:
    # Given a template as `sam init` writes it (a CodeUri per function) plus a global one
    template = tmp_path / "infra" / "template.yaml"
    template.parent.mkdir()
    template.write_text(
        "Transform: AWS::Serverless-2016-10-31\n"
        "Globals:\n  Function:\n    CodeUri: ../src/\n"
        "Resources:\n"
        "  Api:\n    Type: AWS::Serverless::Function\n    Properties:\n      Handler: app.handler\n"
        "  Worker:\n    Type: AWS::Serverless::Function\n"
        "    Properties:\n      Handler: worker.handler\n      CodeUri: worker/\n"
        "  Queue:\n    Type: AWS::SQS::Queue\n"
    )

    # Then the runner imports each handler from its function's directory
    assert code_dirs(template) == {"Api": tmp_path / "src", "Worker": template.parent / "worker"}


def test_a_function_without_a_local_code_uri_is_named(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Worker:\n    Type: AWS::Serverless::Function\n"
        "    Properties:\n      Handler: worker.handler\n      CodeUri: s3://bucket/code.zip\n"
    )

    with pytest.raises(ValueError, match="Worker needs a local CodeUri"):
        code_dirs(template)
