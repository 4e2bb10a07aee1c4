"""Fault injection: duplicates, SES throttling, poison messages and a worker killed mid-batch.

The template's stack lives in moto (the `aws` fixture). The workers are the real handlers fed
by the real local pollers: one in-process `offload.local.poller.Poller` per queue, plus an
EmailWorker instance in its own process (`python -m offload.local poll <spec>`, talking to
moto's server), which is SIGKILLed in the middle of a batch and restarted.

Faults:
- every task message is sent twice;
- 20% of the in-process SES SendEmail calls raise Throttling (a botocore hook, seeded RNG);
- 5% of each queue's tasks are poison: not a task message, an unknown task, invalid
  arguments, or (email) a recipient that SES rejects with MessageRejected (moto's server
  answers it, so every worker sees it the same way);
- the worker process is killed while it is inside an SES call, after it finished at least
  one record of the same batch (moto's server holds that call until the kill, then fails it:
  the email is never recorded, so the redelivery's email is the only one). It runs the
  records of a batch one after another (OFFLOAD_RECORD_CONCURRENCY=1; the in-process workers
  run ten at a time, the default): with other records in flight, the kill could land between
  another record's SES call and the write that records it, the crash window the README
  documents, where an email may go out twice. The in-process EmailWorker starts after the
  kill: until then the worker process has the EmailQueue to itself, and full batches.

moto's DynamoDB is made atomic per request (offload.local.moto_dynamodb), as DynamoDB is:
exactly-once rests on the conditional write that claims a task's record.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core.exceptions import JsonRESTError
from moto.server import ThreadedMotoServer
from moto.sesv2.responses import SESV2Response

from example_app.emails import send_email
from example_app.notifications import write_log
from offload.enqueue import TaskCall, enqueue
from offload.local.moto_dynamodb import serialize_dynamodb_requests
from offload.local.poller import Poller
from offload.local.stack import EventSource
from offload.models import TaskMessage, TaskState
from offload.registry import definition_of
from tests.reliability.support import print_table
from tests.support import REGION, AwsStack, JsonLogs, compose, free_port, installed

pytestmark = pytest.mark.timeout(240)

TASKS_PER_KIND = int(os.getenv("OFFLOAD_FAULT_TASKS", "300"))
POISON_RATE = 0.05
THROTTLE_RATE = 0.20
SEED = 20_240_501
VISIBILITY_SECONDS = 4
MAX_RECEIVES = 10
# Its claims' leases end this long after start. Like the EmailWorker's: it
# must exceed OFFLOAD_RECORD_TIME_BUDGET_MS (20 s), or the worker takes no record at all.
KILLED_WORKER_TIMEOUT = 30
KILL_MARKER = "offload-fault-victim"
VICTIM_CONCURRENCY = 1  # records of a batch the killed worker runs at once (see above)
BLOCKED_DOMAIN = "blocked.example.com"
DEADLINE_SECONDS = 150
FEED_CHUNK = 20  # tasks per send; with their duplicates, about 40 messages
FEED_LOW_WATER = 30  # send more once a queue holds fewer messages than this
UNPARSEABLE = "not a task message"


# ---------------------------------------------------------------- the workload
Item = TaskCall | tuple[TaskMessage | str, str]  # a valid call, or (poison message, variant)


@dataclass
class Workload:
    valid_email: dict[UUID, str] = field(default_factory=dict)  # task id → recipient
    valid_log: dict[UUID, str] = field(default_factory=dict)  # task id → log text
    poison: dict[UUID, str] = field(default_factory=dict)  # task id → kind of poison
    plan: dict[str, list[Item]] = field(default_factory=dict)  # queue → items, in send order
    messages: Counter[str] = field(default_factory=Counter)  # queue → messages sent

    @property
    def all_ids(self) -> set[UUID]:
        return set(self.valid_email) | set(self.valid_log) | set(self.poison)

    @property
    def with_status(self) -> set[UUID]:
        """The tasks that get a status: all but the poison whose body is not a task message,
        since nothing is written on the word of a message that failed validation."""
        return {t for t in self.all_ids if self.poison.get(t) != UNPARSEABLE}

    def label(self, task_id: UUID) -> str:
        """What a task is: email, log, or its kind of poison."""
        if task_id in self.valid_email:
            return "email"
        return "log" if task_id in self.valid_log else self.poison[task_id]


def _poison_message(kind: str, queue: str, index: int) -> tuple[TaskMessage | str, str]:
    """A poison task for `queue`: (message or raw body, what is wrong with it)."""
    task_id = uuid4()
    variants = [UNPARSEABLE, "unknown task", "invalid arguments"]
    if queue == "email":
        variants.append("rejected by SES")
    variant = variants[index % len(variants)]
    if variant == UNPARSEABLE:
        body = {"task_id": str(task_id), "kind": kind, "payload": {}, "smuggled": "x"}
        return json.dumps(body), variant
    if variant == "unknown task":
        return TaskMessage(task_id=task_id, kind="rm_rf_everything", payload={}), variant
    if variant == "invalid arguments":
        payload: dict[str, Any] = {"to": "not-an-address", "subject": "x", "text": "x"}
        if kind == "write_log":
            payload = {"message": ["not", "a", "string"]}
        return TaskMessage(task_id=task_id, kind=kind, payload=payload), variant
    payload = {"to": f"poison-{index}@{BLOCKED_DOMAIN}", "subject": "Hi", "text": "x"}
    return TaskMessage(task_id=task_id, kind=kind, payload=payload), variant


def _poison_id(message: TaskMessage | str) -> UUID:
    if isinstance(message, TaskMessage):
        return message.task_id
    return UUID(json.loads(message)["task_id"])


def build_workload() -> Workload:
    """300 valid tasks per queue, 5% poison among them, in a seeded random order."""
    rng = random.Random(SEED)
    workload = Workload()
    email, log = definition_of(send_email), definition_of(write_log)
    email_calls = [
        TaskCall(email, email.payload(to=f"user-{i}@example.com", subject=f"#{i}", text="Hi"))
        for i in range(TASKS_PER_KIND)
    ]
    log_calls = [
        TaskCall(log, log.payload(f"fault-injection log line {i}")) for i in range(TASKS_PER_KIND)
    ]
    workload.valid_email = {c.task_id: c.payload["to"] for c in email_calls}
    workload.valid_log = {c.task_id: c.payload["message"] for c in log_calls}
    for queue, kind, calls in (
        ("email", "send_email", email_calls),
        ("tasks", "write_log", log_calls),
    ):
        poison_count = round(len(calls) * POISON_RATE / (1 - POISON_RATE))
        poison = [_poison_message(kind, queue, i) for i in range(poison_count)]
        workload.poison |= {_poison_id(message): variant for message, variant in poison}
        items: list[Item] = [*calls, *poison]
        rng.shuffle(items)
        workload.plan[queue] = items
    return workload


def _send(aws: AwsStack, workload: Workload, queue: str, items: list[Item]) -> None:
    """Send a chunk: valid tasks through enqueue (status queued + a message), then each message
    again (the duplicate); poison messages twice."""
    url = aws.email_queue if queue == "email" else aws.task_queue
    calls = [item for item in items if isinstance(item, TaskCall)]
    messages = (
        enqueue(installed(), calls, correlation_id=f"fault-{queue}-{uuid4().hex[:8]}")
        if calls
        else []
    )
    duplicates: list[TaskMessage] = list(messages)
    for item in items:
        if isinstance(item, TaskCall):
            continue
        message, _ = item
        if isinstance(message, TaskMessage):
            duplicates += [message, message]
            continue
        attributes: dict[str, Any] = {
            "task_id": {"DataType": "String", "StringValue": str(_poison_id(message))},
            "kind": {
                "DataType": "String",
                "StringValue": "send_email" if queue == "email" else "write_log",
            },
        }
        for _ in range(2):
            installed().sqs.send_raw(url, message, attributes)
        workload.messages[queue] += 2
    assert not installed().sqs.send_messages(url, duplicates), "SQS refused a message"
    workload.messages[queue] += len(messages) + len(duplicates)


def feed(aws: AwsStack, workload: Workload, stop: threading.Event) -> None:
    """Send the plan in chunks, keeping each queue shallow (moto's SQS slows as it deepens)."""
    cursors = dict.fromkeys(workload.plan, 0)
    urls = {"email": aws.email_queue, "tasks": aws.task_queue}
    while not stop.is_set() and any(cursors[q] < len(workload.plan[q]) for q in cursors):
        sent = False
        for queue, items in workload.plan.items():
            start = cursors[queue]
            if (
                start >= len(items)
                or sum(installed().sqs.counts(urls[queue]).values()) > FEED_LOW_WATER
            ):
                continue
            _send(aws, workload, queue, items[start : start + FEED_CHUNK])
            cursors[queue] = start + FEED_CHUNK
            sent = True
        if not sent:
            stop.wait(0.1)


# ---------------------------------------------------------------- faults
class SesFaults:
    """Client-side throttling (in-process SES client) and server-side rejection and blocking."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.lock = threading.Lock()
        self.calls = 0
        self.throttled = 0
        self.rejected = 0
        self.victim_logs: VictimLogs | None = None
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.kill_done = False

    def throttle(self, **_: Any) -> None:
        """before-call.sesv2.SendEmail on the in-process client: 20% raise Throttling."""
        with self.lock:
            self.calls += 1
            hit = self.rng.random() < THROTTLE_RATE
            self.throttled += hit
        if hit:
            raise ClientError(
                {
                    "Error": {"Code": "Throttling", "Message": "Maximum sending rate exceeded."},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "SendEmail",
            )

    def server_side(self, original: Any) -> Any:
        faults = self

        def send_email(response: SESV2Response) -> Any:
            params = json.loads(response.body)
            to = params.get("Destination", {}).get("ToAddresses", [])
            if any(address.endswith("@" + BLOCKED_DOMAIN) for address in to):
                with faults.lock:
                    faults.rejected += 1
                raise JsonRESTError("MessageRejected", "Email address is on the suppression list")
            agent = response.headers.get("User-Agent", "")
            if KILL_MARKER in agent and not faults.kill_done and faults.victim_mid_batch():
                faults.kill_done = True
                faults.blocked.set()  # the test kills the worker now
                faults.release.wait(30)
                raise JsonRESTError("ServiceUnavailable", "the caller is gone")
            return original(response)

        return send_email

    def victim_mid_batch(self) -> bool:
        """Is the victim (inside a record: this SES call) past a success in the same batch?"""
        logs = self.victim_logs
        if logs is None:
            return False
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline and logs.succeeded_in_batch() < 1:
            time.sleep(0.005)  # let the log reader catch up with the worker's stdout
        return logs.succeeded_in_batch() >= 1


class VictimLogs:
    """Reads the killed worker's JSON log lines from its stdout."""

    def __init__(self, process: "subprocess.Popen[str]") -> None:
        self.records: list[dict[str, Any]] = []
        self.last_message: str | None = None
        self.last_request: str | None = None
        self.succeeded: Counter[str] = Counter()
        assert process.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or "message" not in record:
                continue
            self.records.append(record)
            self.last_request = record.get("function_request_id", self.last_request)
            self.last_message = str(record["message"])
            if record["message"] == "task succeeded" and self.last_request:
                self.succeeded[self.last_request] += 1

    def succeeded_in_batch(self) -> int:
        return self.succeeded[self.last_request] if self.last_request else 0


# ---------------------------------------------------------------- workers
def event_source(aws: AwsStack, queue: str, environment: dict[str, str]) -> EventSource:
    url = aws.email_queue if queue == "email" else aws.task_queue
    return EventSource(
        function="EmailWorker" if queue == "email" else "TaskWorker",
        handler="workers.email.handler" if queue == "email" else "workers.tasks.handler",
        timeout=30,
        memory=512,
        environment=environment,
        queue_arn=installed().sqs.queue_arn(url),
        queue_url=url,
        batch_size=10,
        max_concurrency=2,
        report_batch_item_failures=True,
    )


def spawn_worker(source: EventSource, endpoint: str, marker: str | None) -> "subprocess.Popen[str]":
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    env |= source.environment | {"AWS_ENDPOINT_URL": endpoint, "PYTHONUNBUFFERED": "1"}
    if marker:
        env["AWS_SDK_UA_APP_ID"] = marker
    spec = json.dumps(asdict(source))
    return subprocess.Popen(
        [sys.executable, "-m", "offload.local", "poll", spec],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture
def fast_retries(aws: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Short backoff and visibility, and more receives, so the run fits in a test."""

    settings = {
        "OFFLOAD_RETRY_BASE_SECONDS": "0.5",
        "OFFLOAD_RETRY_MAX_SECONDS": "2",
        "OFFLOAD_MAX_RECEIVE_COUNT": str(MAX_RECEIVES),
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    compose(monkeypatch)
    client = boto3.client("sqs", region_name=REGION)
    saved = {}
    for url, dlq in ((aws.email_queue, aws.email_dlq), (aws.task_queue, aws.task_dlq)):
        saved[url] = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        redrive = {
            "deadLetterTargetArn": installed().sqs.queue_arn(dlq),
            "maxReceiveCount": MAX_RECEIVES,
        }
        client.set_queue_attributes(
            QueueUrl=url,
            Attributes={
                "VisibilityTimeout": str(VISIBILITY_SECONDS),
                "RedrivePolicy": json.dumps(redrive),
            },
        )
    try:
        yield
    finally:
        for url, attributes in saved.items():
            client.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the run
def test_every_task_runs_once_under_faults(
    aws: AwsStack, fast_retries: None, json_logs: JsonLogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: moto's server for the out-of-process worker, with SES faults on both sides, and
    # DynamoDB's atomic conditional writes (moto's server threads and the in-process pollers
    # share one backend: without this, two claims of one task can both pass, two emails)
    started = time.monotonic()
    serialize_dynamodb_requests()
    faults = SesFaults()
    monkeypatch.setattr(SESV2Response, "send_email", faults.server_side(SESV2Response.send_email))
    installed().clients.ses.meta.events.register("before-call.sesv2.SendEmail", faults.throttle)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    environment = dict(aws.environment) | {
        k: v for k, v in os.environ.items() if k.startswith(("OFFLOAD_", "POWERTOOLS_"))
    }
    environment["POWERTOOLS_SERVICE_NAME"] = "offload-email-worker"

    # ... and 300 valid tasks of each kind plus 5% poison, every message sent twice, fed in
    # chunks while the workers run
    workload = build_workload()
    stop_feeding = threading.Event()
    feeder = threading.Thread(target=feed, args=(aws, workload, stop_feeding), daemon=True)

    # When: the workers run: one in-process poller per queue, and a worker process on email
    email_source = event_source(aws, "email", environment)
    task_source = event_source(aws, "tasks", environment)
    victim_source = EventSource(
        **{
            **asdict(email_source),
            "timeout": KILLED_WORKER_TIMEOUT,
            "environment": environment | {"OFFLOAD_RECORD_CONCURRENCY": str(VICTIM_CONCURRENCY)},
        }
    )
    victim = spawn_worker(victim_source, endpoint, KILL_MARKER)
    faults.victim_logs = VictimLogs(victim)
    pollers = [Poller(email_source, boto3.client("sqs")), Poller(task_source, boto3.client("sqs"))]
    threads = [threading.Thread(target=p.run, daemon=True) for p in pollers]
    email_thread, task_thread = threads
    # The worker process has the EmailQueue to itself until it is killed, so that its batches
    # are full (the in-process worker, ten records at a time, would leave it single messages).
    for thread in (task_thread, feeder):
        thread.start()
    restarted: subprocess.Popen[str] | None = None
    restarted_logs: VictimLogs | None = None
    kill: dict[str, Any] = {}
    try:
        # ... the worker process is SIGKILLed inside an SES call, mid-batch, then restarted
        assert faults.blocked.wait(60), "the worker process never reached a mid-batch SES call"
        victim_logs = faults.victim_logs
        kill = {
            "done_in_batch": victim_logs.succeeded_in_batch(),
            "at": time.monotonic() - started,
        }
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        faults.release.set()
        kill["returncode"] = victim.returncode
        restarted = spawn_worker(victim_source, endpoint, None)
        restarted_logs = VictimLogs(restarted)  # also keeps its stdout pipe drained
        email_thread.start()

        # ... until every task is final and both queues are empty
        feeder.join(DEADLINE_SECONDS)
        enqueued_at = time.monotonic()
        final_states = wait_until_settled(aws, workload)
    finally:
        stop_feeding.set()
        for poller in pollers:
            poller.stopping.set()
        for process in (victim, restarted):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(10)
        faults.release.set()
        server.stop()
    settled_at = time.monotonic()

    # Then: every valid task succeeded, with exactly one effect
    states = Counter(final_states.values())
    emails = Counter(
        address for m in aws.sent_emails() for address in m.destinations["ToAddresses"]
    )
    logs = json_logs.records + faults.victim_logs.records
    logs += restarted_logs.records if restarted_logs else []
    log_lines = Counter(
        r["task_id"] for r in logs if r.get("event") == "write_log" and "task_id" in r
    )
    for task_id, recipient in workload.valid_email.items():
        assert final_states[task_id] == TaskState.SUCCEEDED, task_id
        assert emails[recipient] == 1, f"{recipient}: {emails[recipient]} emails"
    for task_id in workload.valid_log:
        assert final_states[task_id] == TaskState.SUCCEEDED, task_id
        assert log_lines[str(task_id)] == 1, f"{task_id}: {log_lines[str(task_id)]} log lines"
    assert not any(address.endswith(BLOCKED_DOMAIN) for address in emails)

    # ... every poison task is dead, with its reason in the status and in an ERROR log line;
    # a body that is not a task message leaves no status at all (nothing is written on its word)
    reasons = {
        r["task_id"]: r.get("reason")
        for r in logs
        if r.get("level") == "ERROR" and r.get("task_id") and r.get("reason")
    }
    for task_id, variant in workload.poison.items():
        assert reasons.get(str(task_id)), f"no logged reason for poison task {task_id}"
        if variant == UNPARSEABLE:
            assert installed().tasks.get(task_id) is None, (task_id, installed().tasks.get(task_id))
            continue
        assert final_states[task_id] == TaskState.DEAD, (task_id, variant)
        assert installed().tasks.get(task_id).error, task_id  # type: ignore[union-attr]

    # ... and nothing is lost: the queues are empty and the DLQs hold exactly the poison tasks
    dead_lettered = {
        "email": aws.receive_all(aws.email_dlq),
        "tasks": aws.receive_all(aws.task_dlq),
    }
    dlq_ids = Counter(
        m["MessageAttributes"]["task_id"]["StringValue"]
        for ms in dead_lettered.values()
        for m in ms
    )
    assert set(dlq_ids) == {str(t) for t in workload.poison}
    assert all(
        m["MessageAttributes"]["error"]["StringValue"] for ms in dead_lettered.values() for m in ms
    )
    for url in (aws.email_queue, aws.task_queue):
        assert sum(installed().sqs.counts(url).values()) == 0
    assert set(final_states) == workload.with_status

    # The figures
    victim_records = faults.victim_logs.records
    throttled_share = faults.throttled / max(faults.calls, 1)
    succeeded, dead = states[TaskState.SUCCEEDED], states[TaskState.DEAD]
    messages_of = Counter(r["message"] for r in logs)
    print_table(
        "Fault injection: 300 tasks of each kind, every message twice",
        [
            ("send_email tasks (valid)", len(workload.valid_email)),
            ("write_log tasks (valid)", len(workload.valid_log)),
            ("poison tasks (both queues)", len(workload.poison)),
            (
                "messages sent (email / tasks queue)",
                f"{workload.messages['email']} / {workload.messages['tasks']}",
            ),
            (
                "SES calls in-process / throttled",
                f"{faults.calls} / {faults.throttled} ({throttled_share:.0%})",
            ),
            ("SES MessageRejected (server)", faults.rejected),
            ("retries scheduled (task failed; will retry)", messages_of["task failed; will retry"]),
            (
                "duplicates skipped",
                messages_of["task already finished; duplicate delivery skipped"],
            ),
            (
                "deliveries held by another's claim",
                messages_of["task is running in another delivery"],
            ),
            (
                "worker killed (SIGKILL) after N done in its batch",
                f"N={kill.get('done_in_batch')} at {kill.get('at', 0):.1f}s, "
                f"rc={kill.get('returncode')}",
            ),
            ("worker process log lines before the kill", len(victim_records)),
            (
                "emails in moto SES (valid recipients, each once)",
                f"{sum(emails.values())} ({len(emails)})",
            ),
            ("write_log log events (each once)", sum(log_lines.values())),
            (
                "states succeeded / dead / other",
                f"{succeeded} / {dead} / {len(final_states) - succeeded - dead}",
            ),
            (
                "DLQ messages (email / tasks), distinct tasks",
                f"{len(dead_lettered['email'])} / {len(dead_lettered['tasks'])}, {len(dlq_ids)}",
            ),
            ("queues left (visible+in flight)", 0),
            ("last task enqueued after", f"{enqueued_at - started:.1f}s"),
            ("all settled after", f"{settled_at - started:.1f}s"),
        ],
    )


def wait_until_settled(aws: AwsStack, workload: Workload) -> dict[UUID, TaskState]:
    """Poll the task table and the queues until every task is final and both queues are empty."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    ids = workload.with_status
    deadline = time.monotonic() + DEADLINE_SECONDS
    states: dict[UUID, TaskState] = {}
    while time.monotonic() < deadline:
        if any(
            sum(installed().sqs.counts(url).values()) for url in (aws.email_queue, aws.task_queue)
        ):
            time.sleep(0.5)
            continue
        states = {}
        pages = dynamodb.get_paginator("scan").paginate(
            TableName=aws.tasks_table,
            ProjectionExpression="task_id, #s",
            ExpressionAttributeNames={"#s": "state"},
        )
        for page in pages:
            for item in page["Items"]:
                task_id = UUID(item["task_id"]["S"])  # type: ignore[index]
                if task_id in ids:
                    states[task_id] = TaskState(item["state"]["S"])  # type: ignore[index]
        if len(states) == len(ids) and all(s.is_final for s in states.values()):
            return states
        time.sleep(1)
    pending = Counter(s.value for s in states.values() if not s.is_final)
    unknown = Counter(workload.label(t) for t in ids - set(states))
    queued = Counter(workload.label(t) for t, s in states.items() if not s.is_final)
    counts = {
        url.rsplit("-", 1)[-1]: installed().sqs.counts(url)
        for url in (aws.email_queue, aws.task_queue)
    }
    pytest.fail(
        f"not settled in {DEADLINE_SECONDS}s: unknown {unknown}, {pending} {queued}, {counts}"
    )
