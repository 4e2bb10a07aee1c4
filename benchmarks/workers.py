"""Figure (d) and what a task costs: the EmailWorker against a raw loop of its SES calls.

For each model (moto alone, then moto behind the latency model), a fresh moto server
provisioned from template.yaml and a child process (benchmarks._worker) that enqueues emails
through the API's handler, then runs the EmailWorker's handler on batches of 10 records,
interleaved with the baseline: the same 10 SendEmail calls through a pool of 10 threads.

Behind the latency model the proxy counts every request by service and operation, which gives
the requests per task (API and worker), the DynamoDB writes per successful task and the cost
per million tasks (benchmarks._prices), next to what SQS alone would cost. The counts do not
depend on the delays; only the model's proxy counts them.
"""

import logging
from collections import defaultdict
from typing import Any

from benchmarks import _prices as prices
from benchmarks._common import (
    BENCH_ENV,
    ROOT,
    Row,
    child_env,
    environ,
    measured,
    median,
    quick,
    run_json_child,
    server_pid,
)
from benchmarks._latency import aws_endpoint, configured, describe

BATCHES = 20
QUICK_BATCHES = 4
SENDER = "bench@example.com"
MODELS = {"moto": None, "latency model": "model"}


def memory_mb(function: str) -> int:
    """A function's MemorySize in template.yaml (or the Globals' one)."""
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse((ROOT / "template.yaml").read_text())
    default = template.get("Globals", {}).get("Function", {}).get("MemorySize", 128)
    properties = template["Resources"][function].get("Properties", {})
    return int(properties.get("MemorySize", default))


def _run_child(delays: dict[str, float] | None, batches: int) -> dict[str, Any]:
    from offload.local.runner import provision_local

    # The SAM translator warns about its own unpublished usage metrics when they are collected.
    logging.getLogger("samtranslator.metrics").setLevel(logging.ERROR)
    with aws_endpoint(delays) as endpoint:
        aws = {**BENCH_ENV, "AWS_ENDPOINT_URL": endpoint.moto_url}
        with environ(aws):
            stack = provision_local(endpoint.moto_url, ROOT / "template.yaml", SENDER)
        source = next(s for s in stack.event_sources if s.function == "EmailWorker")
        env = child_env(
            **{**stack.environment("ApiFunction"), **stack.environment("EmailWorker")},
            AWS_ENDPOINT_URL=endpoint.url,
            BENCH_MOTO_URL=endpoint.moto_url,
            BENCH_QUEUE_ARN=source.queue_arn,
            BENCH_MOTO_PID=str(server_pid(endpoint.moto_url) or ""),
        )
        if delays is not None:
            env["BENCH_PROXY_URL"] = endpoint.url
            env["BENCH_PROXY_PID"] = str(server_pid(endpoint.url) or "")
        data: dict[str, Any] = run_json_child(
            "benchmarks._worker", [str(batches)], env, "worker benchmark"
        )
        return data


def _per_task(counts: dict[str, Any], callers: set[str] | None, tasks: int) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for caller, services in (counts or {}).items():
        if callers is not None and caller not in callers:
            continue
        for service, operations in services.items():
            for operation, n in operations.items():
                totals[f"{service}.{operation}"] += n / tasks
    return dict(sorted(totals.items()))


def _breakdown(per_task: dict[str, float]) -> str:
    return ", ".join(f"{op} {n:.2g}" for op, n in per_task.items()) or "none"


# Index writes per task (see cost_rows).
INDEX_WRITES_PER_TASK = 1


def cost_rows(data: dict[str, Any], api_ms: float) -> list[Row]:
    """Requests per task, DynamoDB writes per successful task and the cost per million."""
    tasks, succeeded = data["tasks"], max(data["succeeded"], 1)
    worker_callers = {c for c in data["worker_counts"] or {} if c != data["baseline_key"]}
    api = _per_task(data["api_counts"], None, tasks)
    worker = _per_task(data["worker_counts"], worker_callers, succeeded)
    both: dict[str, float] = defaultdict(float)
    for part in (api, worker):
        for op, n in part.items():
            both[op] += n

    def total(service: str, operations: set[str] | None = None) -> float:
        return sum(
            n
            for op, n in both.items()
            if op.split(".")[0] == service
            and (operations is None or op.split(".")[1] in operations)
        )

    writes = total("dynamodb", prices.DYNAMODB_WRITES)
    # The first write of a task's record also writes its key to the listing index (by_owner,
    # KEYS_ONLY, written once): a WRU the proxy cannot see. Items stay under 1 KB: 1 WRU a write.
    wru = writes + INDEX_WRITES_PER_TASK
    reads = total("dynamodb", prices.DYNAMODB_READS)
    event_source = prices.EVENT_SOURCE_REQUESTS_PER_BATCH / 10
    sqs_requests = total("sqs") + event_source
    worker_ms = median(data["samples"]["worker_ms"])
    per_task = {
        "SQS": sqs_requests * prices.SQS_PER_REQUEST,
        "DynamoDB": wru * prices.DYNAMODB_PER_WRU + reads * prices.DYNAMODB_PER_RRU,
        "Lambda": prices.lambda_cost(memory_mb("ApiFunction"), api_ms / 1000)
        + prices.lambda_cost(memory_mb("EmailWorker"), worker_ms / 1000) / 10,
    }
    ses = total("ses", {"SendEmail"}) * prices.SES_PER_EMAIL
    without_ses = sum(per_task.values()) * 1e6
    sqs_alone = (1 + event_source) * prices.SQS_PER_REQUEST * 1e6
    shares = ", ".join(f"{k} {v * 1e6 / without_ses:.0%}" for k, v in per_task.items())
    old_dynamodb = wru * prices.DYNAMODB_PER_WRU_BEFORE_2024_11 * 1e6
    model = "latency model"
    return [
        {
            "figure": f"requests per task, API (vs one SendMessage) [{model}]",
            "value": sum(api.values()),
            "baseline": 1.0,
            "ratio": sum(api.values()),
            "target": None,
            "unit": "",
            "variant": model,
            "note": _breakdown(api),
        },
        {
            "figure": f"requests per task, EmailWorker (vs one SendEmail) [{model}]",
            "value": sum(worker.values()),
            "baseline": 1.0,
            "ratio": sum(worker.values()),
            "target": None,
            "unit": "",
            "variant": model,
            "note": f"{_breakdown(worker)}; plus the SQS event source's receive and delete",
        },
        {
            "figure": f"DynamoDB writes per successful task, API + worker [{model}]",
            "value": writes,
            "baseline": None,
            "ratio": None,
            "target": "≤ 3 (2 if every guarantee holds)",
            "unit": "",
            "variant": model,
            "passed": writes <= 3,
            "note": f"{data['succeeded']} of {tasks} tasks succeeded",
        },
        {
            "figure": f"cost per million tasks without SES (vs SQS alone) [{model}]",
            "value": without_ses,
            "baseline": sqs_alone,
            "ratio": without_ses / sqs_alone,
            "target": "≤ $4",
            "unit": "$",
            "variant": model,
            "passed": without_ses <= 4,
            "note": (
                f"{shares}; Lambda arm64 at {memory_mb('ApiFunction')} MB x {api_ms:.1f} ms "
                f"(API) and {memory_mb('EmailWorker')} MB x {worker_ms:.0f} ms per batch of 10; "
                f"DynamoDB at $0.625/M WRU, {wru:.2g} WRU a task incl. its listing index write "
                f"(at the pre-2024-11 $1.25: "
                f"${without_ses - wru * prices.DYNAMODB_PER_WRU * 1e6 + old_dynamodb:.2f}); "
                f"prices of {prices.SOURCE_DATE}, benchmarks/_prices.py"
            ),
        },
        {
            "figure": f"cost per million tasks with SES (vs SQS + SES alone) [{model}]",
            "value": without_ses + ses * 1e6,
            "baseline": sqs_alone + prices.SES_PER_EMAIL * 1e6,
            "ratio": (without_ses + ses * 1e6) / (sqs_alone + prices.SES_PER_EMAIL * 1e6),
            "target": None,
            "unit": "$",
            "variant": model,
            "note": "SES: $0.10 per 1,000 emails",
        },
    ]


def _per_record(samples: dict[str, list[Any]], name: str) -> float | None:
    """The median of a per-batch CPU sample, per record (None if it was not measured)."""
    values = [v for v in samples.get(name, []) if v is not None]
    return median(values) / 10 if values else None


def _servers_note(samples: dict[str, list[Any]]) -> str:
    """What the embedded AWS spent on this machine, which AWS would spend on its own."""
    moto = _per_record(samples, "worker_moto_cpu")
    raw_moto = _per_record(samples, "raw_moto_cpu")
    if moto is None or raw_moto is None:
        return ""
    note = f"; moto's server spent {moto:.1f} ms CPU per record ({raw_moto:.1f} per raw SendEmail)"
    proxy, raw_proxy = (
        _per_record(samples, "worker_proxy_cpu"),
        _per_record(samples, "raw_proxy_cpu"),
    )
    if proxy is not None and raw_proxy is not None:
        note += f", the latency model's proxy {proxy:.1f} ({raw_proxy:.1f})"
    if moto > 0:
        note += (
            f": CPU that AWS would not spend here, on the same 2 cores; moto answers one request "
            f"at a time (one process, one GIL), which caps the worker at about "
            f"{1000 / moto:.0f} rec/s whatever it does itself"
        )
    return note


def worker_figures(batches: int) -> list[Row]:
    delays = configured()
    variants: dict[str, dict[str, float] | None] = {"moto": None}
    if delays is not None:
        variants["latency model"] = delays
    rows: list[Row] = []
    for variant, model_delays in variants.items():
        data = _run_child(model_delays, batches)
        samples = data["samples"]
        value, baseline = median(samples["worker"]), median(samples["raw"])
        where = "moto server" if model_delays is None else describe(model_delays)
        worker_cpu, raw_cpu = _per_record(samples, "worker_cpu"), _per_record(samples, "raw_cpu")
        rows.append(
            {
                "figure": f"(d) EmailWorker records/s (vs raw SES loop, 10 in flight) [{variant}]",
                "value": value,
                "baseline": baseline,
                "ratio": value / baseline,
                "target": "≥ 0.8\u00d7",
                "unit": "rec/s",
                "variant": variant,
                "passed": value / baseline >= 0.8,
                "note": (
                    f"{where}; median of {batches} batches of 10; worker CPU "
                    f"{worker_cpu or 0:.1f} ms per record; "
                    f"{data['failed']} records failed{_servers_note(samples)}"
                ),
            }
        )
        if worker_cpu is not None and raw_cpu:
            rows.append(
                {
                    "figure": (
                        f"(d) CPU per record in the worker's process (vs the raw loop's per "
                        f"SendEmail) [{variant}]"
                    ),
                    "value": worker_cpu,
                    "baseline": raw_cpu,
                    "ratio": worker_cpu / raw_cpu,
                    "target": None,
                    "unit": "ms",
                    "variant": variant,
                    "note": (
                        "the CPU figure of (d), without the embedded AWS's CPU: what the "
                        "function itself spends (Lambda bills it; AWS does the servers' part "
                        "elsewhere); a record makes 3 calls (claim, SendEmail, outcome), the "
                        "raw loop 1"
                    ),
                }
            )
        if model_delays is not None:
            rows.extend(cost_rows(data, median(data["api_ms"])))
    return rows


def run() -> list[Row]:
    batches = QUICK_BATCHES if quick() else BATCHES
    return measured("(d) EmailWorker records/s", lambda: worker_figures(batches))
