"""Figure (d) in a child process: the EmailWorker against a raw loop of the same SES calls.

`python -m benchmarks._worker BATCHES OUT.json`, with the environment of the ApiFunction and the
EmailWorker (the template's stack in moto) and AWS_ENDPOINT_URL at moto or at the latency model
(BENCH_PROXY_URL then names the model, whose counts this process reads and resets):

1. enqueues BATCHES x 10 emails through `api.main.handler` (POST /emails, as API Gateway calls
   it) and reads what those requests cost, by service and operation;
2. plays Lambda's SQS event source (directly against moto, BENCH_MOTO_URL: that part is not the
   function's): receives 10 messages, invokes `workers.email.handler` with them, deletes those
   that succeeded; times the handler only. Interleaved with each batch, the baseline: 10
   `SendEmail` calls through a thread pool of 10, under its own access key;
3. reads, around each batch and each baseline round, the CPU time of this process and of the
   servers (BENCH_MOTO_PID: moto; BENCH_PROXY_PID: the latency model), which real AWS would
   not spend on this machine;
4. writes samples, counts and outcomes to OUT.json.
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx

from benchmarks._common import process_cpu_ms

BATCH = 10
BASELINE_KEY = "baseline"


def _servers_cpu_ms() -> tuple[float | None, float | None]:
    """CPU time so far of moto's server and of the latency model's proxy (None: unknown)."""

    def pid(name: str) -> int | None:
        value = os.environ.get(name)
        return int(value) if value else None

    return process_cpu_ms(pid("BENCH_MOTO_PID")), process_cpu_ms(pid("BENCH_PROXY_PID"))


def _spent(before: tuple[float | None, ...], after: tuple[float | None, ...]) -> list[float | None]:
    return [
        b - a if a is not None and b is not None else None
        for a, b in zip(before, after, strict=True)
    ]


def _counts(reset: bool = False) -> Any:
    proxy = os.environ.get("BENCH_PROXY_URL")
    if not proxy:
        return None
    counts = httpx.get(f"{proxy}/_latency/counts", timeout=10).json()
    if reset:
        httpx.post(f"{proxy}/_latency/reset", timeout=10).raise_for_status()
    return counts


def main(batches: int, out: Path) -> None:
    from api.main import handler as api
    from benchmarks._enqueue import Context, emails_event
    from offload.local.lambda_runtime import LambdaContext, sqs_event
    from workers.email import handler as worker

    event = emails_event()
    body = {"to": "ada@example.com", "subject": "Hello", "text": "A durable email."}
    event["body"] = json.dumps(body)
    tasks = batches * BATCH
    _counts(reset=True)
    api_ms = []
    for _ in range(tasks):
        start = time.perf_counter()
        response = api(event, Context())
        api_ms.append((time.perf_counter() - start) * 1000)
        if response["statusCode"] != 202:
            raise RuntimeError(f"POST /emails: {response['statusCode']} {response['body']}")
    api_counts = _counts(reset=True)

    direct = os.environ["BENCH_MOTO_URL"]
    sqs = boto3.client("sqs", endpoint_url=direct)
    queue_url, queue_arn = os.environ["OFFLOAD_EMAIL_QUEUE_URL"], os.environ["BENCH_QUEUE_ARN"]
    sender = os.environ["OFFLOAD_SENDER_EMAIL"]
    ses = boto3.client("sesv2", aws_access_key_id=BASELINE_KEY, aws_secret_access_key=BASELINE_KEY)

    def send(index: int) -> str:
        response = ses.send_email(
            FromEmailAddress=sender,
            Destination={"ToAddresses": [body["to"]]},
            Content={
                "Simple": {
                    "Subject": {"Data": body["subject"], "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": body["text"], "Charset": "UTF-8"}},
                }
            },
        )
        return response["MessageId"]

    pool = ThreadPoolExecutor(max_workers=BATCH)
    list(pool.map(send, range(BATCH)))  # warm the baseline's client and connections
    _counts(reset=True)
    samples: dict[str, list[Any]] = {
        name: []
        for name in (
            "worker",
            "raw",
            "worker_ms",
            "worker_cpu",
            "raw_cpu",
            "worker_moto_cpu",
            "worker_proxy_cpu",
            "raw_moto_cpu",
            "raw_proxy_cpu",
        )
    }
    succeeded = failed = 0
    for index in range(batches):
        messages: list[Any] = []
        for _ in range(20):
            messages += sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=BATCH - len(messages),
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if len(messages) == BATCH:
                break
        if not messages:
            raise RuntimeError("the email queue is empty: the API enqueued nothing")
        order = ("worker", "raw") if index % 2 == 0 else ("raw", "worker")
        for name in order:
            servers = _servers_cpu_ms()
            if name == "raw":
                start, cpu = time.perf_counter(), time.process_time()
                list(pool.map(send, range(len(messages))))
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
                samples["raw"].append(len(messages) / elapsed)
                samples["raw_cpu"].append(cpu * 1000)
                moto, proxy = _spent(servers, _servers_cpu_ms())
                samples["raw_moto_cpu"].append(moto)
                samples["raw_proxy_cpu"].append(proxy)
                continue
            context = LambdaContext(function_name="EmailWorker", timeout_seconds=30)
            start, cpu = time.perf_counter(), time.process_time()
            response = worker(sqs_event(messages, queue_arn), context)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            moto, proxy = _spent(servers, _servers_cpu_ms())
            samples["worker_moto_cpu"].append(moto)
            samples["worker_proxy_cpu"].append(proxy)
            samples["worker"].append(len(messages) / elapsed)
            samples["worker_ms"].append(elapsed * 1000)
            samples["worker_cpu"].append(cpu * 1000)
            failures = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            failed += len(failures)
            done = [m for m in messages if m["MessageId"] not in failures]
            succeeded += len(done)
            if done:
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(done)
                    ],
                )
    pool.shutdown()
    worker_counts = _counts(reset=True)
    result = {
        "samples": samples,
        "api_ms": api_ms[1:],  # the first request composes Offload
        "tasks": tasks,
        "succeeded": succeeded,
        "failed": failed,
        "api_counts": api_counts,
        "worker_counts": worker_counts,
        "baseline_key": BASELINE_KEY,
    }
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
