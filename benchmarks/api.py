"""The API's figures from issue 2, each against a baseline measured in the same run.

(a) import and init of the API handler module, in a fresh process;
(b) one enqueue request in-process through Mangum, against moto (in-process and server);
(c) the slowest answer of a plain `def` endpoint while a burst of 200 requests each start a
    2-second task: the seed's in-process BackgroundTasks against Offload.

Subjects and baselines alternate (ABAB) and the figures are medians, because these machines
are noisy.
"""

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx

from benchmarks._common import (
    BENCH_ENV,
    ROOT,
    Row,
    child_env,
    free_port,
    measured,
    median,
    moto_server,
    row,
    spawn,
    stop,
    wait_http,
)

IMPORT_RUNS = 15
ENQUEUE_ROUNDS = 300
BURST_SIZE = 200
BURST_ROUNDS = 3
TASK_SECONDS = 2.0
PROBE_WINDOW_SECONDS = 12.0  # the seed's 200 tasks drain in ~10 s
IDLE_PROBES = 40


# --------------------------------------------------------------------------- (a) import
def _import_ms(statement: str) -> float:
    """Time `statement` in a fresh interpreter, measured inside it (interpreter start excluded)."""
    code = (
        "import time\nstart = time.perf_counter()\n"
        f"{statement}\n"
        "print((time.perf_counter() - start) * 1000)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def import_figure(runs: int = IMPORT_RUNS) -> list[Row]:
    subject = "from api.main import handler"
    baseline = "from benchmarks.baselines.bare_handler import handler"
    _import_ms(subject), _import_ms(baseline)  # warm the OS file cache and the .pyc files
    samples: dict[str, list[float]] = {subject: [], baseline: []}
    for index in range(runs):
        order = (subject, baseline) if index % 2 == 0 else (baseline, subject)
        for statement in order:
            samples[statement].append(_import_ms(statement))
    return [
        row(
            "(a) import + init of api.main (vs bare FastAPI+Mangum+SQS client)",
            median(samples[subject]),
            median(samples[baseline]),
            1.25,
            note=f"fresh process, median of {runs} each",
        )
    ]


# --------------------------------------------------------------------------- (b) enqueue
def _enqueue_samples(mode: str, rounds: int, env: dict[str, str]) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.json"
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks._enqueue", mode, str(rounds), str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,  # the API's JSON logs
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"enqueue benchmark ({mode}) failed:\n{result.stderr[-2000:]}")
        samples: dict[str, list[float]] = json.loads(out.read_text())
        return samples


def enqueue_figures(rounds: int = ENQUEUE_ROUNDS) -> list[Row]:
    rows = []
    samples = _enqueue_samples("mock", rounds, child_env())
    rows.append(
        row(
            "(b) POST /emails through Mangum, moto in-process (vs one send_message)",
            median(samples["offload"]),
            median(samples["bare"]),
            1.2,
            note=f"mock_aws, median of {rounds} each",
        )
    )
    with moto_server() as url:
        samples = _enqueue_samples("server", rounds, child_env(AWS_ENDPOINT_URL=url))
    rows.append(
        row(
            "(b) POST /emails through Mangum, moto server (vs one send_message)",
            median(samples["offload"]),
            median(samples["bare"]),
            1.2,
            note=f"moto server process, median of {rounds} each",
        )
    )
    return rows


# --------------------------------------------------------------------------- (c) burst
@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _uvicorn(app: str, env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    process = spawn([*args, "--no-access-log", "--log-level", "warning"], env, log)
    try:
        wait_http(f"{url}/ping", process)
        yield url
    finally:
        stop(process)


@contextmanager
def _seed_system(logs: Path) -> Iterator[str]:
    with _uvicorn("benchmarks.baselines.seed_app:app", child_env(), logs / "seed.log") as url:
        yield url


@contextmanager
def _offload_system(logs: Path) -> Iterator[str]:
    """moto's server provisioned from template.yaml, the API under uvicorn, TaskWorker pollers."""
    from offload.local.stack import provision

    # The SAM translator warns about its own unpublished usage metrics when they are collected.
    logging.getLogger("samtranslator.metrics").setLevel(logging.ERROR)

    with moto_server(logs / "moto.log") as moto_url, _environ(BENCH_ENV):
        stack = provision(moto_url, ROOT / "template.yaml", {"Stage": "dev"})
        extra = {
            "AWS_ENDPOINT_URL": moto_url,
            "OFFLOAD_TASK_MODULES": "benchmarks.subjects.slow_task",
        }
        api_env = child_env(**stack.environment("ApiFunction"), **extra)
        source = next(s for s in stack.event_sources if s.function == "TaskWorker")
        source = replace(source, environment={**source.environment, **extra})
        from offload.local.poller import spec_argument

        pollers = [
            spawn(
                ["-m", "offload.local", "poll", spec_argument(source)],
                child_env(**extra),
                logs / f"poller{i}.log",
            )
            for i in range(2)
        ]
        try:
            with _uvicorn("benchmarks.subjects.offload_app:app", api_env, logs / "api.log") as url:
                yield url
        finally:
            for poller in pollers:
                stop(poller)


def _idle_ms(client: httpx.Client, url: str) -> float:
    """Warm the server with one task, let it finish, then time GET /ping one after another."""
    client.post(f"{url}/work?seconds={TASK_SECONDS}").raise_for_status()
    time.sleep(TASK_SECONDS + 0.5)
    samples = []
    for _ in range(IDLE_PROBES):
        start = time.perf_counter()
        client.get(f"{url}/ping").raise_for_status()
        samples.append((time.perf_counter() - start) * 1000)
        time.sleep(0.01)
    return median(samples)


def _slowest_during_burst_ms(client: httpx.Client, url: str, seconds: float) -> tuple[float, float]:
    """Probe GET /ping one after another while another process fires the burst.

    Returns the slowest answer while the burst's POSTs were in flight, and the slowest after
    every POST was answered, while the 2-second tasks run (the seed runs them in-process).
    """
    burst = spawn(
        ["-m", "benchmarks._burst", f"{url}/work?seconds={seconds:g}", str(BURST_SIZE)],
        child_env(),
    )
    started = time.monotonic()
    slowest = {"burst": 0.0, "tasks": 0.0}
    try:
        while time.monotonic() - started < PROBE_WINDOW_SECONDS or burst.poll() is None:
            if time.monotonic() - started > 120:
                raise TimeoutError("the burst did not finish within 120 s")
            phase = "burst" if burst.poll() is None else "tasks"
            start = time.perf_counter()
            client.get(f"{url}/ping").raise_for_status()
            elapsed = (time.perf_counter() - start) * 1000
            slowest[phase] = max(slowest[phase], elapsed)
            time.sleep(0.02)
        if burst.wait() != 0:
            raise RuntimeError(f"some POSTs of the burst to {url} failed")
    finally:
        stop(burst)
    return slowest["burst"], slowest["tasks"]


def burst_figures(rounds: int = BURST_ROUNDS) -> list[Row]:
    # name → (system, task seconds). "floor" is the seed with 0-second tasks: what a burst of
    # 200 requests costs a one-process server by itself, with no thread pool starved.
    systems = {
        "seed": (_seed_system, TASK_SECONDS),
        "offload": (_offload_system, TASK_SECONDS),
        "floor": (_seed_system, 0.0),
    }
    idle: dict[str, list[float]] = {name: [] for name in systems}
    slowest: dict[str, list[float]] = {name: [] for name in systems}
    after: dict[str, list[float]] = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=60) as client:
        for index in range(rounds):
            order = list(systems) if index % 2 == 0 else list(reversed(systems))
            for name in order:
                system, seconds = systems[name]
                # A fresh system each round: no tasks left over from the previous burst.
                with system(Path(tmp)) as url:
                    idle[name].append(_idle_ms(client, url))
                    during, while_tasks_run = _slowest_during_burst_ms(client, url, seconds)
                    slowest[name].append(during)
                    after[name].append(while_tasks_run)
    note = f"{BURST_SIZE} concurrent POSTs, median of {rounds} bursts"
    return [
        row(
            "(c) slowest GET /ping during burst, Offload (vs its idle latency)",
            median(slowest["offload"]),
            median(idle["offload"]),
            2.0,
            note=f"{note}; 2 s tasks run in the TaskWorker, API against moto server",
        ),
        row(
            "(c) slowest GET /ping during burst, seed BackgroundTasks (vs its idle latency)",
            median(slowest["seed"]),
            median(idle["seed"]),
            None,
            note=f"{note}; 2 s tasks in-process: /ping waits for a free thread",
        ),
        row(
            "(c) slowest GET /ping after the 202s, while tasks run, Offload (vs idle)",
            median(after["offload"]),
            median(idle["offload"]),
            2.0,
            note=f"{note}; every POST answered, the tasks still running in the TaskWorker",
        ),
        row(
            "(c) floor: same burst, seed with 0 s tasks (vs its idle latency)",
            median(slowest["floor"]),
            median(idle["floor"]),
            None,
            note=f"{note}; the cost of the burst itself to a one-process server",
        ),
    ]


def run() -> list[Row]:
    # Each group is measured on its own: a failure is a row with its reason, not a lost run.
    return [
        *measured("(a) import + init of api.main", import_figure),
        *measured("(b) POST /emails through Mangum", enqueue_figures),
        *measured("(c) slowest GET /ping during a burst", burst_figures),
    ]
