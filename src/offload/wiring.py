"""Composition: Settings and clients, built once where a handler or an app is composed, and
passed down.

    from offload.wiring import build

    offload = build()            # Settings() from the environment, clients built on first use

A worker's handler (offload.worker.sqs_handler) builds one at its first invocation, the FastAPI
side at its first request (offload.fastapi.get_offload, overridable with
app.dependency_overrides), a test wherever it needs one. Nothing here runs at import.

While the worker runtime or the in-process fallback runs a task, `current()` is the Offload that
runs it: a task function reaches its clients and settings there (as example_app's tasks do).
"""

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property

from offload.aws.clients import Clients
from offload.aws.idempotency import IdempotencyStores
from offload.aws.payloads import PayloadStore
from offload.aws.scheduler import Scheduler
from offload.aws.sqs import Sqs
from offload.aws.tasks_table import TasksTable
from offload.settings import Settings


class Offload:
    """Everything the library's logic reads and writes through, composed from one Settings.
    Each part is built on its first use, with its client: composing is cheap, and a process
    that never touches AWS (the in-process fallback without a tasks table) needs no region."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = Clients(settings)
        self._said: set[Hashable] = set()
        self._said_lock = threading.Lock()
        self._queue_arns: dict[str, str] = {}

    def first_time(self, key: Hashable) -> bool:
        """True the first time this composition is asked about `key`: for what the logs say once
        per process (a process composes one Offload)."""
        with self._said_lock:
            if key in self._said:
                return False
            self._said.add(key)
            return True

    @cached_property
    def tasks(self) -> TasksTable:
        s = self.settings
        return TasksTable(
            self.clients.dynamodb,
            s.tasks_table,
            ttl_days=s.task_ttl_days,
            max_receive_count=s.max_receive_count,
        )

    @cached_property
    def payloads(self) -> PayloadStore:
        return PayloadStore(self.clients.s3, self.settings.payload_bucket)

    @cached_property
    def sqs(self) -> Sqs:
        clients = self.clients
        return Sqs(clients.sqs, lambda: clients.sqs_long_poll, self.settings.max_message_bytes)

    @cached_property
    def scheduler(self) -> Scheduler:
        s = self.settings
        return Scheduler(
            self.clients.scheduler, s.schedule_group, s.scheduler_role_arn, s.scheduler_dlq_arn
        )

    def queue_arn(self, queue: str) -> str:
        """The queue's ARN (a one-time schedule's target), asked of SQS once per process."""
        with self._said_lock:
            arn = self._queue_arns.get(queue)
        if arn is None:
            arn = self.sqs.queue_arn(self.settings.queue_url(queue))
            with self._said_lock:
                self._queue_arns[queue] = arn
        return arn

    @cached_property
    def idempotency(self) -> IdempotencyStores:
        s = self.settings
        return IdempotencyStores(
            self.clients.dynamodb, s.idempotency_table, s.idempotency_ttl_seconds
        )


def build(settings: Settings | None = None) -> Offload:
    """Compose Offload from `settings` (default: read from the environment now)."""
    return Offload(settings if settings is not None else Settings())


_current: ContextVar[Offload | None] = ContextVar("offload_current", default=None)


def current() -> Offload:
    """The Offload that runs the current task (in a worker, or in-process)."""
    offload = _current.get()
    if offload is None:
        raise RuntimeError(
            "no Offload is running a task here: offload.wiring.current() is for task functions "
            "that a worker (or the in-process fallback) runs; wrap other calls in running(offload)"
        )
    return offload


@contextmanager
def running(offload: Offload) -> Iterator[Offload]:
    """Make `offload` current() while a task runs."""
    token = _current.set(offload)
    try:
        yield offload
    finally:
        _current.reset(token)
