"""`make run`: the whole system on 127.0.0.1, with no AWS account and no Docker."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError
from moto.core.model_instances import model_data
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from offload.local import dashboard
from offload.local.build import EmulatorError
from offload.local.emulator import Runtime, built_function
from offload.local.moto_dynamodb import serialize_dynamodb_requests
from offload.local.poller import spec_argument
from offload.local.scheduler import LocalScheduler
from offload.local.stack import LocalStack, provision
from offload.local.task_log import RECEIVED_KEY, TaskLog, serve

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",  # moto accepts any credentials
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


# The emulator's line per invocation (--built): shown with --verbose.
INVOCATION_LINES = ("START RequestId:", "END RequestId:", "REPORT RequestId:")


DEFAULT_API_PORT = 8000
DEFAULT_MOTO_PORT = 4566


@dataclass
class Options:
    host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    moto_port: int = DEFAULT_MOTO_PORT
    sender: str = "noreply@example.com"
    instances: int = 2
    template: Path = field(default_factory=lambda: Path.cwd() / "template.yaml")
    verbose: bool = False
    environment: dict[str, str] | None = None
    built: bool = False  # run the built packages under the Lambda runtime emulator


def _say(message: str) -> None:
    print(f"{datetime.now():%H:%M:%S}  {message}", flush=True)


class _MotoNotImplemented(logging.Filter):
    """One line, once, instead of a traceback (per SDK retry) when a client calls what moto
    does not emulate."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        last_line = record.getMessage().rsplit("\n", 1)[-1]  # werkzeug logs the traceback text
        if not last_line.startswith("NotImplementedError: "):
            return True
        error = last_line.removeprefix("NotImplementedError: ")
        if error in self.seen:
            return False
        self.seen.add(error)
        record.msg, record.args = f"{'':10}[moto] {error} (not emulated locally)", ()
        return True


class MotoServer:
    """moto's server in a thread. Unlike moto's ThreadedMotoServer, a failed bind raises here
    instead of leaving start() waiting forever."""

    def __init__(self, host: str, port: int) -> None:
        serialize_dynamodb_requests()  # its threads must not let two conditional writes pass
        app = DomainDispatcherApplication(create_backend_app)
        self.server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, name="moto", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def start_moto(host: str, port: int) -> MotoServer:
    """moto's server, started, with its Lambda set to never look for Docker (port 0: a free one,
    then in moto.server.server_port)."""
    moto = MotoServer(host, port)
    moto.start()
    requests.post(
        f"http://{host}:{moto.server.server_port}/moto-api/config",
        json={"lambda": {"use_docker": False}},
        timeout=5,
    ).raise_for_status()
    return moto


def provision_local(moto_url: str, template: Path, sender: str) -> LocalStack:
    """The template's stack in moto, and what moto's CloudFormation leaves out that the local
    system needs: the SES sender identity."""
    stack = provision(moto_url, template, {"Stage": "dev", "SenderEmail": sender})
    # The runner plays Lambda; moto's dashboard (/moto-api/data.json, used by `make emails`)
    # fails on Lambda models without Docker, so they are left out of it.
    model_data.pop("awslambda", None)
    boto3.client("sesv2", endpoint_url=moto_url).create_email_identity(EmailIdentity=sender)
    return stack


class LocalSystem:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.moto_url = f"http://{options.host}:{options.moto_port}"
        self.api_url = f"http://{options.host}:{options.api_port}"
        self.moto: MotoServer | None = None
        self.stack: LocalStack | None = None
        self.children: dict[str, subprocess.Popen[str]] = {}
        self.stopping = threading.Event()
        self.runtime: Runtime | None = None
        # The workers' log lines per task, served to the dashboard (in the API process).
        self.task_log = TaskLog()
        self.task_log_server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ start
    def function_environment(self, function: str) -> dict[str, str]:
        """What one of the template's functions runs with: its variables from the template,
        local credentials, moto as every AWS endpoint, and its code directory on the path."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OFFLOAD_"))}
        env.update(LOCAL_CREDENTIALS)
        env["AWS_ENDPOINT_URL"] = self.moto_url
        env["PYTHONUNBUFFERED"] = "1"
        # The handler is imported from the function's CodeUri, as Lambda unpacks it.
        assert self.stack is not None
        paths = [str(self.stack.code_dirs[function]), os.environ.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env.update(self.stack.environment(function))
        env.update(self.options.environment or {})
        return env

    def built_spec(self, function: str) -> dict[str, Any]:
        """One instance of the function's built package, for a child process to start."""
        assert self.stack is not None and self.runtime is not None
        local = {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url}
        spec = built_function(function, self.stack.functions[function], self.runtime.build, local)
        spec.environment.update(self.options.environment or {})
        return self.runtime.spec(spec)

    def check_ports(self) -> None:
        for port, flag in (
            (self.options.moto_port, "--moto-port"),
            (self.options.api_port, "--api-port"),
        ):
            with socket.socket() as probe:
                # As the servers do: connections of a run that just stopped (TIME_WAIT) must not
                # make the port look taken; a listener still does.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.options.host, port))
                except OSError:
                    raise SystemExit(
                        f"port {port} on {self.options.host} is in use (is another `make run` "
                        f'going?). Stop it, or pick another port: make run ARGS="{flag} <port>"'
                    ) from None

    def start(self) -> None:
        werkzeug_log = logging.getLogger("werkzeug")
        werkzeug_log.setLevel(logging.ERROR)
        werkzeug_log.addFilter(_MotoNotImplemented())
        os.environ.update({**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url})
        if self.options.built:
            try:
                self.runtime = Runtime.prepare(self.options.template, _say)
            except EmulatorError as error:
                raise SystemExit(str(error)) from None
            _say(
                f"mode: built — the packages in {self.runtime.build} under the Lambda runtime "
                f"emulator, with {self.runtime.python}"
            )
        else:
            _say("mode: source — handlers imported from their CodeUri with this environment")
        _say(f"starting the embedded AWS (moto) on {self.moto_url}")
        try:
            self.moto = start_moto(self.options.host, self.options.moto_port)
        except OSError as error:  # taken since the check above
            raise SystemExit(
                f"the embedded AWS cannot listen on {self.moto_url}: {error}. "
                f'Pick another port: make run ARGS="--moto-port <port>"'
            ) from None
        _say(f"provisioning from {self.options.template.name} (SAM → CloudFormation → moto)")
        self.stack = provision_local(self.moto_url, self.options.template, self.options.sender)
        _say(f"  SES sender identity {self.options.sender} verified")
        for logical, physical in sorted(self.stack.resources.items()):
            if logical.endswith(("Queue", "Table", "Bucket", "Topic")):
                _say(f"  {logical:<22} {physical.rsplit('/', 1)[-1].rsplit(':', 1)[-1]}")
        kinds: dict[str, int] = {}
        for kind in self.stack.left_out.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        _say(
            "  not emulated (moto cannot create them; the runner serves the API and plays the "
            "triggers): " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        )
        self._start_api()
        self._start_pollers()
        if self.stack.schedules:
            _say(
                "  schedules (fired by the runner, as EventBridge Scheduler would): "
                + ", ".join(sorted(s for s in self.stack.schedules.values() if "/" in s))
            )
        # One-time schedules of tasks run later, and the template's: fired on time.
        LocalScheduler(self.moto_url, _say).start(self.stopping)
        table = self.tasks_table()
        if table:
            threading.Thread(
                target=self._watch_tasks, args=(table,), name="task-watcher", daemon=True
            ).start()

    def tasks_table(self) -> str | None:
        """The table the functions record task states in (their OFFLOAD_TASKS_TABLE)."""
        assert self.stack is not None
        for function in self.stack.functions:
            table = self.stack.environment(function).get("OFFLOAD_TASKS_TABLE")
            if table:
                return table
        return None

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.options.template.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.children[name] = process
        assert process.stdout is not None
        threading.Thread(
            target=self._relay, args=(name, process.stdout), name=f"relay-{name}", daemon=True
        ).start()

    def _start_api(self) -> None:
        assert self.stack is not None
        if self.stack.api_function is None:
            _say("  no function serves an HTTP API in the template: no API started")
            return
        function = self.stack.api_function
        env = self.function_environment(function)
        if self.runtime is not None:
            _say(f"  {function}: serves the HTTP API as API Gateway does, invoking its package")
            self._spawn(
                "api",
                [
                    "-m", "offload.local", "gateway", json.dumps(self.built_spec(function)),
                    self.options.host, str(self.options.api_port),
                ],
                env,
            )  # fmt: skip
            return
        # The FastAPI app is `app` in the module of the handler that Mangum wraps; the local
        # dashboard is served beside it, at /dashboard (offload.local.dashboard).
        module = self.stack.functions[function]["Handler"].rpartition(".")[0]
        _say(f"  {function}: serves the HTTP API with uvicorn ({module}:app)")
        self.task_log_server = serve(self.task_log, self.options.host)
        env[dashboard.APP_VARIABLE] = f"{module}:app"
        env[dashboard.TASK_LOG_VARIABLE] = (
            f"http://{self.options.host}:{self.task_log_server.server_port}"
        )
        self._spawn(
            "api",
            [
                "-m", "uvicorn", "offload.local.dashboard:create_app", "--factory",
                "--host", self.options.host,
                "--port", str(self.options.api_port),
                "--no-server-header",
            ],
            env,
        )  # fmt: skip

    def _start_pollers(self) -> None:
        assert self.stack is not None
        for source in self.stack.event_sources:
            instances = max(1, min(source.max_concurrency, self.options.instances))
            _say(
                f"  {source.function}: polls {source.queue_url.rsplit('/', 1)[-1]} "
                f"(batch {source.batch_size}, {instances} of max {source.max_concurrency} "
                f"instances, handler {source.handler})"
            )
            env = self.function_environment(source.function)
            built = self.built_spec(source.function) if self.runtime is not None else None
            for index in range(instances):
                self._spawn(
                    f"{source.function}#{index}",
                    ["-m", "offload.local", "poll", spec_argument(source, built)],
                    env,
                )

    # ------------------------------------------------------------------ output
    def _relay(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            text = line.rstrip()
            if not text:
                continue
            try:
                record: dict[str, Any] = json.loads(text)
                if not isinstance(record, dict):
                    raise ValueError("not a log record")
            except ValueError:
                if self.options.verbose or not text.startswith(INVOCATION_LINES):
                    print(f"{'':10}[{name}] {text}", flush=True)
                continue
            if self.task_log.add(record, name) and RECEIVED_KEY in record:
                continue
            level = str(record.get("level", "INFO"))
            if level in {"INFO", "DEBUG"} and not self.options.verbose:
                continue
            keys = " ".join(
                f"{k}={' '.join(str(record[k]).split())}"  # one line, also for multi-line errors
                for k in ("task_id", "kind", "attempt", "error", "reason", "retry_in_seconds")
                if k in record
            )
            print(f"{'':10}[{name}] {level} {record.get('message')} {keys}", flush=True)
            if self.options.verbose and "exception" in record:
                print(record["exception"], flush=True)

    def _watch_tasks(self, table: str) -> None:
        """Print each task's state changes, read from the tasks table."""
        dynamodb = boto3.client("dynamodb", endpoint_url=self.moto_url)
        seen: dict[str, str] = {}
        while not self.stopping.wait(0.2):
            try:
                items = dynamodb.scan(TableName=table)["Items"]
            except (BotoCoreError, ClientError):  # moto is stopping
                continue
            for item in sorted(items, key=lambda i: i["updated_at"]["S"]):
                task_id, state = item["task_id"]["S"], item["state"]["S"]
                if seen.get(task_id) == state:
                    continue
                before = seen.get(task_id, "new")
                seen[task_id] = state
                attempts = item.get("attempts", {}).get("N", "0")
                error = f"  error: {item['error']['S'][:160]}" if "error" in item else ""
                _say(
                    f"task …{task_id[-8:]}  {item['kind']['S']:<14} {before:>9} → {state:<9}"
                    f" attempt {attempts}{error}"
                )

    # ------------------------------------------------------------------ stop
    def wait_until_ready(self, timeout: float = 30) -> None:
        api = self.children.get("api")
        if api is None:  # the template has no HTTP API
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise RuntimeError("the API process exited; see its output above")
            try:
                # Any answer will do (the app may have no /health): uvicorn answers only once
                # the app has started.
                requests.get(self.api_url, timeout=1)
                return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the API did not answer on {self.api_url} within {timeout} s")

    def stop(self) -> None:
        self.stopping.set()
        for process in self.children.values():
            if process.poll() is None:
                process.terminate()
        for process in self.children.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.task_log_server is not None:
            self.task_log_server.shutdown()
        if self.moto is not None:
            self.moto.stop()


def routes(api_url: str) -> list[tuple[str, str, bool]]:
    """The API's routes from its OpenAPI schema: (method, path, whether it takes a body)."""
    try:
        paths = requests.get(f"{api_url}/openapi.json", timeout=5).json()["paths"]
        return [
            (method.upper(), path, "requestBody" in operation)
            for path, item in paths.items()
            for method, operation in item.items()
        ]
    except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError):
        return []


def banner(system: LocalSystem, options: Options) -> str:
    """What is running, and where: printed once everything answers."""
    api = system.api_url
    auth = auth_line = ""
    if (options.environment or {}).get("OFFLOAD_API_TOKEN"):
        auth = ' -H "Authorization: Bearer $OFFLOAD_API_TOKEN"'
        auth_line = (
            "\n    Token        needed on every route but /health; export OFFLOAD_API_TOKEN"
            " in your shell (`offload upload` reads it too)"
        )
    found = routes(api) if "api" in system.children else []
    calls = [
        (f"curl {api}{path}{auth}" if method == "GET" else f"curl -X {method} {api}{path}{auth}")
        + (" -H 'content-type: application/json' -d '{...}'   # see /docs" if body else "")
        for method, path, body in found
    ]
    # `make` targets only where there is a Makefile that has them (this repository)
    here = options.template.parent / "Makefile"
    makefile = here.read_text(errors="replace") if here.is_file() else ""
    calls.append(
        "offload emails    # what the embedded SES has sent"
        + (" (here: make emails)" if "\nemails:" in makefile else "")
    )
    if ("POST", "/uploads", True) in found:
        calls.append(
            "offload upload data.csv    # an upload, end to end"
            + (" (here: make upload)" if "\nupload:" in makefile else "")
        )
    if options.api_port != DEFAULT_API_PORT or options.moto_port != DEFAULT_MOTO_PORT:
        calls.append(
            f"export OFFLOAD_API_PORT={options.api_port} OFFLOAD_MOTO_PORT={options.moto_port}"
            "    # in other terminals, for the tools above"
        )
    listed = "".join(f"\n    {call}" for call in calls)
    mode = (
        f"built packages ({system.runtime.build.name}) under the Lambda runtime emulator"
        if system.runtime is not None
        else "source (handlers imported from their CodeUri)"
    )
    dashboard_line = (
        f"\n    Dashboard    {api}{dashboard.PREFIX}   (tasks, queues, emails, uploads)"
        if system.task_log_server is not None
        else ""
    )
    return f"""
  Offload is running locally.
    Mode         {mode}
    API          {api}   (docs: {api}/docs){dashboard_line}
    Embedded AWS {system.moto_url}   (AWS_ENDPOINT_URL, or the aws cli's --endpoint-url){auth_line}

  Try (fill in the {{parameters}}):{listed}

  Press Ctrl-C to stop.
"""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(options: Options) -> None:
    system = LocalSystem(options)
    # SIGTERM stops like Ctrl-C, also while starting; SIGINT too when the shell that started
    # `make run` in the background ignored it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    system.check_ports()
    try:
        system.start()
        system.wait_until_ready()
        print(banner(system, options), flush=True)
        while True:
            time.sleep(0.5)
            for name, process in system.children.items():
                if process.poll() is not None:
                    raise SystemExit(
                        f"{name} exited with code {process.returncode} (its output is above); "
                        "the local system stopped"
                    )
    except KeyboardInterrupt:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut it short
            signal.signal(signum, signal.SIG_IGN)
        try:
            _say("stopping")
        finally:
            system.stop()  # even when the terminal is gone and printing fails
        _say("stopped")
