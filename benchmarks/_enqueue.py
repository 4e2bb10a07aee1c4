"""Figure (b) in a child process: one enqueue request in-process through Mangum, against moto.

`python -m benchmarks._enqueue {mock|server} ROUNDS OUT.json` times `api.main.handler` on an HTTP
API v2 `POST /emails` event against the bare Mangum handler, interleaved, and writes every
sample (wall and CPU time of this process, in ms) to OUT.json. With `server`,
AWS_ENDPOINT_URL must point at moto's server or at the latency model in front of it
(BENCH_MOTO_URL then names moto itself, for the harness's own calls); with `mock`, moto runs in
this process (`mock_aws`). Logs go to this process's stdout, which the caller discards.
"""

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

DRAIN_EVERY = 10  # moto's SQS scans the whole queue on each call: keep the queues shallow


class Context:
    """The parts of a Lambda context that Mangum and Powertools read."""

    function_name = "ApiFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


EVENT_FILE = Path(__file__).resolve().parents[1] / "events" / "api-emails.json"


def emails_event() -> dict[str, Any]:
    """events/api-emails.json (what HTTP API sends), served on the $default stage.

    On $default the path carries no stage, so the bare handler routes it the same way.
    """
    if not EVENT_FILE.exists():
        body = {"to": "ada@example.com", "subject": "Hello", "text": "A durable email."}
        return http_api_event("/emails", body)
    event: dict[str, Any] = json.loads(EVENT_FILE.read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/emails"
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["requestContext"]["stage"] = "$default"
    return event


def http_api_event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for a JSON POST."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "content-type": "application/json",
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "user-agent": "curl/8.5.0",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "10/Mar/2025:12:00:00 +0000",
            "timeEpoch": 1741608000000,
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def provision() -> dict[str, str]:
    """The table and queues of (a) and (b), in the AWS that boto3 reaches now; their settings."""
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="bench-tasks",
        AttributeDefinitions=[{"AttributeName": "task_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "task_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sqs = boto3.client("sqs")
    queues = {
        name: sqs.create_queue(QueueName=f"bench-{name}")["QueueUrl"]
        for name in ("email", "tasks", "bare")
    }
    return {
        "OFFLOAD_TASKS_TABLE": "bench-tasks",
        "OFFLOAD_EMAIL_QUEUE_URL": queues["email"],
        "OFFLOAD_TASK_QUEUE_URL": queues["tasks"],
        "BENCH_QUEUE_URL": queues["bare"],
    }


def _provision() -> list[str]:
    settings = provision()
    os.environ.update(settings)
    return [url for name, url in settings.items() if name.endswith("QUEUE_URL")]


def _drain(sqs: Any, queue_url: str) -> None:
    for _ in range(100):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def measure(rounds: int) -> dict[str, list[float]]:
    if "BENCH_QUEUE_URL" in os.environ:  # provisioned by the caller (benchmarks.api)
        names = ("OFFLOAD_EMAIL_QUEUE_URL", "OFFLOAD_TASK_QUEUE_URL", "BENCH_QUEUE_URL")
        queues = [os.environ[name] for name in names]
    else:
        queues = _provision()
    from api.main import handler as offload_handler
    from benchmarks.baselines.bare_handler import handler as bare_handler

    event = emails_event()
    context = Context()
    # The harness drains the queues directly (not through the latency model, if there is one).
    sqs = boto3.client("sqs", endpoint_url=os.environ.get("BENCH_MOTO_URL") or None)
    handlers: dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]] = {
        "offload": offload_handler,
        "bare": bare_handler,
    }
    samples: dict[str, list[float]] = {n: [] for name in handlers for n in (name, f"{name}_cpu")}
    warmup = 10
    for index in range(warmup + rounds):
        if index % DRAIN_EVERY == 0:
            for url in queues:
                _drain(sqs, url)
        order = list(handlers) if index % 2 == 0 else list(reversed(handlers))
        for name in order:
            start, cpu = time.perf_counter(), time.process_time()
            response = handlers[name](event, context)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            if response["statusCode"] != 202:
                raise RuntimeError(f"{name}: {response['statusCode']} {response['body']}")
            if index >= warmup:
                samples[name].append(elapsed * 1000)
                samples[f"{name}_cpu"].append(cpu * 1000)
    return samples


def main(mode: str, rounds: int, out: Path) -> None:
    if mode == "mock":
        from moto import mock_aws

        with mock_aws():
            samples = measure(rounds)
    else:
        samples = measure(rounds)
    out.write_text(json.dumps(samples))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
