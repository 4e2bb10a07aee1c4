"""What the reliability scenarios share: the stack's triggers, fast queues, workers (in threads
or in processes held to Lambda's limits), moto's HTTP server, SDK-level faults, and waits.

Everything here stands in for what AWS does around the code under test, never for that code:
the workers are the template's handlers fed by the real local poller
(`offload.local.poller.Poller`).
"""

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from moto.server import ThreadedMotoServer

from offload.local.moto_dynamodb import serialize_dynamodb_requests
from offload.local.poller import Poller
from offload.local.stack import EventSource, translate
from tests.reliability.lambda_process import MARKER
from tests.support import (
    REGION,
    ROOT,
    STACK_PARAMETERS,
    TEMPLATE,
    AwsStack,
    compose,
    free_port,
    installed,
    load_event,
)

T = TypeVar("T")

# Settings that make retries fast enough for a test (each scenario may add its own).
FAST_SETTINGS = {
    "OFFLOAD_RETRY_BASE_SECONDS": "0.2",
    "OFFLOAD_RETRY_MAX_SECONDS": "1",
    "OFFLOAD_RECORD_TIME_BUDGET_MS": "1000",
    "POWERTOOLS_METRICS_DISABLED": "true",
}
# Lambda ends an invocation at its timeout; the emulation allows this much for the poller.
TIMEOUT_GRACE_SECONDS = 0.5


# ---------------------------------------------------------------- the stack's triggers
@dataclass(frozen=True)
class Trigger:
    """An SQS trigger of template.yaml: which function reads which queue (logical ids)."""

    function: str
    handler: str
    timeout: int
    memory: int
    batch_size: int
    queue: str


@cache
def template_triggers() -> tuple[Trigger, ...]:
    """Every SQS → Lambda trigger of the template, as SAM translates it."""
    cfn = translate(TEMPLATE, STACK_PARAMETERS)
    resources = cfn["Resources"]
    found = []
    for mapping in resources.values():
        if mapping["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        properties = mapping["Properties"]
        source = properties["EventSourceArn"]
        if not (isinstance(source, dict) and "Fn::GetAtt" in source):
            continue
        function = properties["FunctionName"]["Ref"]
        config = resources[function]["Properties"]
        found.append(
            Trigger(
                function=function,
                handler=config["Handler"],
                timeout=int(config.get("Timeout", 3)),
                memory=int(config.get("MemorySize", 128)),
                batch_size=int(properties.get("BatchSize", 10)),
                queue=source["Fn::GetAtt"][0],
            )
        )
    return tuple(found)


def trigger_of(function: str, queue: str | None = None) -> Trigger:
    """The function's trigger on `queue` (a logical id), or its first one."""
    return next(
        t for t in template_triggers() if t.function == function and queue in (None, t.queue)
    )


def triggers_on(queues: Sequence[str], *, besides: Sequence[str] = ()) -> list[Trigger]:
    """The functions the template triggers from these queues (logical ids), but `besides`."""
    return [t for t in template_triggers() if t.queue in queues and t.function not in besides]


def worker_environment(aws: AwsStack, function: str) -> dict[str, str]:
    """The function's environment: the template's OFFLOAD_* and the test's overrides."""
    environment = dict(aws.environment)
    environment |= {
        k: v for k, v in os.environ.items() if k.startswith(("OFFLOAD_", "POWERTOOLS_"))
    }
    environment["POWERTOOLS_SERVICE_NAME"] = f"offload-{function.lower()}"
    return environment


def event_source(
    aws: AwsStack,
    function: str,
    *,
    queue: str | None = None,
    timeout: int | None = None,
    memory: int | None = None,
    batch_size: int | None = None,
) -> EventSource:
    """The local event source of one of the template's functions: its trigger on `queue` (a
    logical id), or its first one; timeout, memory and batch size may be overridden."""
    trigger = trigger_of(function, queue)
    url = aws.resources[trigger.queue]
    return EventSource(
        function=function,
        handler=trigger.handler,
        timeout=timeout or trigger.timeout,
        memory=memory or trigger.memory,
        environment=worker_environment(aws, function),
        queue_arn=installed().sqs.queue_arn(url),
        queue_url=url,
        batch_size=batch_size or trigger.batch_size,
        max_concurrency=2,
        report_batch_item_failures=True,
    )


def dead_letter_queue(aws: AwsStack, queue: str) -> str:
    """The URL of a queue's DLQ (the template names each `<Name>DeadLetterQueue`)."""
    return aws.resources[queue.removesuffix("Queue") + "DeadLetterQueue"]


# ---------------------------------------------------------------- fast queues
@contextmanager
def fast_queues(
    aws: AwsStack,
    monkeypatch: pytest.MonkeyPatch,
    queues: Sequence[str],
    *,
    receives: int,
    visibility: int,
    settings: dict[str, str] | None = None,
) -> Iterator[None]:
    """Few receives, short visibility and fast backoff on `queues` (logical ids), as settings
    and as the queues' own attributes; the attributes are restored afterwards.

    Also makes moto's DynamoDB atomic per request, as DynamoDB is (offload.local.moto_dynamodb): the
    workers' exactly-once rests on conditional writes.
    """
    serialize_dynamodb_requests()
    for name, value in (FAST_SETTINGS | {"OFFLOAD_MAX_RECEIVE_COUNT": str(receives)}).items():
        monkeypatch.setenv(name, value)
    for name, value in (settings or {}).items():
        monkeypatch.setenv(name, value)
    compose(monkeypatch)
    client = boto3.client("sqs", region_name=REGION)
    saved = {}
    for queue in queues:
        url = aws.resources[queue]
        saved[url] = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        redrive = {
            "deadLetterTargetArn": installed().sqs.queue_arn(dead_letter_queue(aws, queue)),
            "maxReceiveCount": receives,
        }
        client.set_queue_attributes(
            QueueUrl=url,
            Attributes={"VisibilityTimeout": str(visibility), "RedrivePolicy": json.dumps(redrive)},
        )
    try:
        yield
    finally:
        for url, attributes in saved.items():
            client.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]


def purge(*urls: str) -> None:
    client = boto3.client("sqs", region_name=REGION)
    for url in urls:
        client.purge_queue(QueueUrl=url)


def queue_depth(url: str) -> int:
    """Visible + in flight + delayed messages."""
    return sum(installed().sqs.counts(url).values())


# ---------------------------------------------------------------- moto's HTTP server
@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on a free port, on the same backends as the in-process mock."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def service_over_http(service: str, endpoint: str) -> Iterator[None]:
    """The test process's clients reach `service` through moto's server (real HTTP, so a
    fault can be a status code or a slow answer), everything else through the mock."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service.upper()}", endpoint)
        compose(monkeypatch)  # undone, with the endpoint, when the context ends
        yield


# ---------------------------------------------------------------- SDK-level faults
@contextmanager
def sdk_hook(event_name: str, handler: Callable[..., Any]) -> Iterator[None]:
    """A botocore event handler on every client built from now on (offload's clients are
    rebuilt), whichever factory builds them; removed afterwards."""
    session = boto3._get_default_session()
    session.events.register(event_name, handler)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            compose(monkeypatch)  # new clients, with the hook
            yield
    finally:
        session.events.unregister(event_name, handler)


def client_error(code: str, message: str, status: int = 400, operation: str = "SendEmail") -> Any:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


# ---------------------------------------------------------------- workers in threads
@dataclass
class Deliveries:
    """What the pollers handed to a handler: records per task, and invocations that raised."""

    records: Counter[str] = field(default_factory=Counter)
    invocations: int = 0
    raised: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[..., Any]:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            with self.lock:
                self.invocations += 1
                for record in event.get("Records", []):
                    self.records[record_task_id(record)] += 1
            try:
                return handler(event, context)
            except Exception as exc:
                with self.lock:
                    self.raised.append(f"{type(exc).__name__}: {exc}"[:300])
                raise

        return invoke


def record_task_id(record: dict[str, Any]) -> str:
    """The task id an SQS record names (attribute, else body), or its message id."""
    attribute = (record.get("messageAttributes") or {}).get("task_id") or {}
    if attribute.get("stringValue"):
        return str(attribute["stringValue"])
    with suppress(ValueError, KeyError, TypeError):
        return str(json.loads(record["body"])["task_id"])
    return str(record.get("messageId"))


@contextmanager
def pollers(sources: Sequence[EventSource], deliveries: Deliveries | None = None) -> Iterator[None]:
    """The real local pollers, one thread per source, in this process (the mock's SQS)."""
    running = []
    for source in sources:
        poller = Poller(source, boto3.client("sqs", region_name=REGION))
        if deliveries is not None:
            poller.handler = deliveries.wrap(poller.handler)
        running.append((poller, threading.Thread(target=poller.run, daemon=True)))
    for _, thread in running:
        thread.start()
    try:
        yield
    finally:
        for poller, _ in running:
            poller.stopping.set()
        for _, thread in running:
            thread.join(15)


# ---------------------------------------------------------------- workers in processes
def _status_kb(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class WorkerProcess:
    """One local poller in its own process (`tests.reliability.lambda_process`), talking to
    moto's server, held to its function's limits as Lambda holds it: SIGKILLed when an
    invocation outlives the timeout or the process outgrows the memory size."""

    def __init__(self, source: EventSource, endpoint: str, user_agent: str | None = None) -> None:
        self.source = source
        self.key = ""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
        env |= source.environment | {"AWS_ENDPOINT_URL": endpoint, "PYTHONUNBUFFERED": "1"}
        if user_agent:
            env["AWS_SDK_UA_APP_ID"] = user_agent
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.lambda_process", json.dumps(asdict(source))],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self.other_output: list[str] = []
        self.invocations = 0
        self.killed: str | None = None  # why the emulated Lambda killed it
        self.peak_rss_kb = 0
        self._invocation_started: float | None = None
        self._stopping = threading.Event()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._monitor = threading.Thread(target=self._watch, daemon=True)
        self._reader.start()
        self._monitor.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _read(self, stream: Any) -> None:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                self.other_output = [*self.other_output[-50:], line.rstrip()]
                continue
            if not isinstance(record, dict):
                continue
            phase = record.get(MARKER)
            if phase == "start":
                self.invocations += 1
                self._invocation_started = time.monotonic()
            elif phase == "end":
                self._invocation_started = None
            else:
                self.records.append(record)

    def _watch(self) -> None:
        limit_kb = self.source.memory * 1024
        while not self._stopping.is_set() and self.alive():
            rss = _status_kb(self.pid, "VmRSS")
            self.peak_rss_kb = max(self.peak_rss_kb, rss, _status_kb(self.pid, "VmHWM"))
            started = self._invocation_started
            if rss > limit_kb:
                self._kill(f"out of memory: {rss // 1024} MB > {self.source.memory} MB")
            elif (
                started and time.monotonic() - started > self.source.timeout + TIMEOUT_GRACE_SECONDS
            ):
                self._kill(f"timed out: an invocation ran over {self.source.timeout} s")
            time.sleep(0.02)

    def _kill(self, reason: str) -> None:
        self.killed = reason
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL now, as a crash would (not a limit of the emulated Lambda)."""
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def reset_peak(self) -> None:
        """Start measuring the peak RSS afresh (Linux resets VmHWM on `5` in clear_refs)."""
        with suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.peak_rss_kb = 0
        self.invocations = 0

    def peak_rss_mb(self) -> float:
        if self.alive():
            self.peak_rss_kb = max(self.peak_rss_kb, _status_kb(self.pid, "VmHWM"))
        return self.peak_rss_kb / 1024

    def stop(self) -> None:
        self._stopping.set()
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)

    def messages(self) -> Counter[str]:
        return Counter(str(r.get("message")) for r in self.records)


class WorkerPool:
    """moto's server and worker processes, kept across a module's tests (a worker process takes
    seconds to start on a busy machine); a worker is restarted when its source changes."""

    def __init__(self) -> None:
        self._server: ThreadedMotoServer | None = None
        self._workers: dict[str, WorkerProcess] = {}

    @property
    def endpoint(self) -> str:
        if self._server is None:
            port = free_port()
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self._server.start()
            self._endpoint = f"http://127.0.0.1:{port}"
        return self._endpoint

    def worker(self, source: EventSource) -> WorkerProcess:
        """A live worker for `source`, its peak RSS and invocations counted from now."""
        key = json.dumps(asdict(source), sort_keys=True)
        worker = self._workers.get(source.function)
        if worker is not None and (not worker.alive() or worker.key != key):
            self.discard(source.function)
            worker = None
        if worker is None:
            worker = WorkerProcess(source, self.endpoint)
            worker.key = key
            self._workers[source.function] = worker
        worker.reset_peak()
        return worker

    def discard(self, function: str) -> None:
        """Stop a worker (after a failed scenario, it may still be busy with its leftovers)."""
        worker = self._workers.pop(function, None)
        if worker is not None:
            worker.stop()

    def close(self) -> None:
        for function in list(self._workers):
            self.discard(function)
        if self._server is not None:
            self._server.stop()


@contextmanager
def worker_process(
    source: EventSource, endpoint: str, user_agent: str | None = None
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(source, endpoint, user_agent)
    try:
        yield worker
    finally:
        worker.stop()


# ---------------------------------------------------------------- the API's entry point
def api_event(
    method: str,
    path: str,
    body: Any = None,
    claims: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """An HTTP API (v2) event for the dev stage, as API Gateway sends it after its JWT
    authorizer accepted a token with these claims."""
    event = copy.deepcopy(load_event("api-get-task.json"))
    stage = event["requestContext"]["stage"]
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/{stage}{path}"
    event["requestContext"]["http"]["method"] = method
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    if idempotency_key is not None:
        event["headers"]["idempotency-key"] = idempotency_key
    if body is not None:
        event["body"] = json.dumps(body)
        event["headers"]["content-type"] = "application/json"
        event["headers"]["content-length"] = str(len(event["body"]))
    if claims is not None:
        event["requestContext"]["authorizer"] = {
            "jwt": {"claims": claims, "scopes": claims["scope"].split()}
        }
    return event


def claims_of(subject: str) -> dict[str, str]:
    """The claims of a user's access token, as API Gateway's JWT authorizer passes them."""
    return {
        "client_id": "4k2q9x7m1r5t8w3z6b0c",
        "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Xq1bR7vC3",
        "scope": "offload/tasks.write offload/tasks.read",
        "sub": subject,
        "token_use": "access",
        "username": subject,
    }


# ---------------------------------------------------------------- waiting
def poll_until(condition: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll `condition` until it is truthy (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(
    condition: Callable[[], T | bool | None],
    timeout: float,
    describe: Callable[[], str],
    interval: float = 0.2,
) -> T:
    """Poll `condition` until it returns something truthy; fail with `describe()` at the end."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"not reached in {timeout:.0f}s: {describe()}")
        time.sleep(interval)
