"""The API's figures, each against a baseline measured in the same run.

(a) import and init of the API handler module, and a cold start (import + first request), in a
    fresh process, against moto and behind the latency model; the built package under
    python3.13 and the Lambda runtime emulator too (skipped without the SAM CLI);
(b) one enqueue request in-process through Mangum, wall and CPU time, against moto (in-process
    and server) and behind the latency model;
(c) the slowest answer of a plain `def` endpoint while a burst of 200 requests each start a
    2-second task: the seed's in-process BackgroundTasks against Offload.

Subjects and baselines alternate (ABAB) and the figures are medians, because these machines
are noisy.
"""

import compileall
import json
import logging
import shutil
import site
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import (
    BENCH_ENV,
    ROOT,
    Row,
    child_env,
    environ,
    free_port,
    measured,
    median,
    moto_server,
    quick,
    row,
    run_json_child,
    skipped,
    spawn,
    stop,
    wait_http,
)
from benchmarks._latency import Endpoint, aws_endpoint, configured, describe

COLD_RUNS = 5
BUILT_RUNS = 3
ENQUEUE_ROUNDS = 200
BURST_SIZE = 200
BURST_ROUNDS = 2
TASK_SECONDS = 2.0
PROBE_WINDOW_SECONDS = 12.0  # the seed's 200 tasks drain in ~10 s
IDLE_PROBES = 40


# --------------------------------------------------------------------------- (a) cold start
@contextmanager
def _resources(delays: dict[str, float] | None) -> Iterator[tuple[Endpoint, dict[str, str]]]:
    """moto's server (behind the latency model unless `delays` is None) with the table and
    queues of (a) and (b); yields the endpoint and the environment of a child that uses them."""
    from benchmarks._enqueue import provision

    with aws_endpoint(delays) as endpoint:
        with environ({**BENCH_ENV, "AWS_ENDPOINT_URL": endpoint.moto_url}):
            settings = provision()
        env = child_env(**settings, AWS_ENDPOINT_URL=endpoint.url, BENCH_MOTO_URL=endpoint.moto_url)
        yield endpoint, env


def _variants() -> dict[str, dict[str, float] | None]:
    """moto alone, and moto behind the latency model (unless OFFLOAD_BENCH_LATENCY=off)."""
    delays = configured()
    return {"moto": None} if delays is None else {"moto": None, "latency model": delays}


def _cold_start(subject: str, env: dict[str, str]) -> dict[str, float]:
    data: dict[str, float] = run_json_child(
        "benchmarks._cold", [subject], env, f"cold start of {subject}"
    )
    return data


def compile_bytecode() -> None:
    """Compile the .pyc files of everything a cold start imports (the code and the venv), as
    a Lambda package ships them: this machine sets PYTHONDONTWRITEBYTECODE, so an import would
    otherwise compile its module from source every time, and the cold start would measure the
    compiler (DESIGN.md: without .pyc files a cold start takes twice as long)."""
    for path in (ROOT / "src", ROOT / "benchmarks", *map(Path, site.getsitepackages())):
        compileall.compile_dir(path, quiet=1, workers=0)


def cold_start_figures(runs: int = COLD_RUNS) -> list[Row]:
    compile_bytecode()
    rows: list[Row] = []
    for variant, delays in _variants().items():
        with _resources(delays) as (_, env):
            if variant == "moto":  # warm the file cache
                _cold_start("offload", env), _cold_start("bare", env)
            samples: dict[str, list[dict[str, float]]] = {"offload": [], "bare": []}
            for index in range(runs):
                order = ("offload", "bare") if index % 2 == 0 else ("bare", "offload")
                for subject in order:
                    samples[subject].append(_cold_start(subject, env))

        def figure(key: str, subject: str) -> float:
            return median([sample[key] for sample in samples[subject]])  # noqa: B023

        note = f"fresh process, .pyc compiled (as a package ships them), median of {runs} each"
        if variant == "moto":
            rows.append(
                row(
                    "(a) import + init of api.main (vs bare FastAPI+Mangum+boto3 handler)",
                    figure("import_ms", "offload"),
                    figure("import_ms", "bare"),
                    1.25,
                    note=f"{note}; no AWS call: the same with or without the latency model",
                )
            )
        rows.append(
            row(
                f"(a) cold start: import + first POST /emails (vs bare handler) [{variant}]",
                figure("cold_ms", "offload"),
                figure("cold_ms", "bare"),
                1.25,
                note=f"{note}; the first request builds the SDK clients",
                variant=variant,
            )
        )
    return rows


def built_figures(runs: int = BUILT_RUNS) -> list[Row]:
    """The built ApiFunction package (sam build) under python3.13 and the Lambda runtime
    emulator, against a bare handler packaged beside the same dependencies: the time from
    starting the runtime to the answer of the first POST /emails."""
    from offload.local.build import EmulatorError
    from offload.local.emulator import Runtime

    figure = "(a) built ApiFunction, python3.13 under the RIE"
    messages: list[str] = []
    try:
        runtime = Runtime.prepare(ROOT / "template.yaml", messages.append)
    except EmulatorError as exc:
        return [skipped(figure, str(exc).splitlines()[0])]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        bare = _bare_package(runtime.build / "ApiFunction", Path(tmp), runtime.python)
        for variant, delays in _variants().items():
            with _resources(delays) as (_, env):
                samples = _built_samples(runtime, bare, env, runs)
            rows.append(
                row(
                    f"{figure}: start + first POST /emails (vs bare package) [{variant}]",
                    median(samples["offload"]),
                    median(samples["bare"]),
                    1.25,
                    note=(
                        f"median of {runs} each; the bare handler is packaged with the "
                        "ApiFunction's own dependencies"
                    ),
                    variant=variant,
                )
            )
    return rows


def _bare_package(built: Path, tmp: Path, python: Path) -> Path:
    """The built ApiFunction's dependencies with the bare handler as bench_bare.py, compiled by
    python3.13 as src/Makefile compiles the package."""
    package = tmp / "BareHandler"
    shutil.copytree(built, package)
    shutil.copy(ROOT / "benchmarks" / "baselines" / "bare_handler.py", package / "bench_bare.py")
    subprocess.run(
        [str(python), "-m", "py_compile", str(package / "bench_bare.py")],
        check=True,
        capture_output=True,
    )
    return package


def _built_samples(
    runtime: Any, bare: Path, env: dict[str, str], runs: int
) -> dict[str, list[float]]:
    from benchmarks._enqueue import emails_event
    from offload.local.emulator import BuiltFunction

    aws = {k: v for k, v in env.items() if k.startswith(("AWS_", "OFFLOAD_", "BENCH_", "POWER"))}
    functions = {
        "offload": BuiltFunction(
            "ApiFunction", "api.main.handler", 10, 512, aws, runtime.build / "ApiFunction"
        ),
        "bare": BuiltFunction("BareHandler", "bench_bare.handler", 10, 512, aws, bare),
    }
    event = json.dumps(emails_event()).encode()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for index in range(runs + 1):  # the first round warms the file cache
        order = list(functions) if index % 2 else list(reversed(functions))
        for name in order:
            emulator = runtime.emulator(functions[name], lambda _line: None)
            try:
                start = time.perf_counter()
                result = emulator.invoke(event)
                elapsed = (time.perf_counter() - start) * 1000
            finally:
                emulator.stop()
            status = result.json().get("statusCode") if not result.error else None
            if status != 202:
                raise RuntimeError(f"built {name}: {result.payload[:300]!r}")
            if index:
                samples[name].append(elapsed)
    return samples


# --------------------------------------------------------------------------- (b) enqueue
def _enqueue_samples(mode: str, rounds: int, env: dict[str, str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = run_json_child(
        "benchmarks._enqueue", [mode, str(rounds)], env, f"enqueue benchmark ({mode})"
    )
    return samples


def enqueue_figures(rounds: int = ENQUEUE_ROUNDS) -> list[Row]:
    figure = "(b) POST /emails through Mangum (vs bare route, one send_message)"
    cpu_figure = "(b) CPU per POST /emails, API process (vs bare route)"
    samples = _enqueue_samples("mock", rounds, child_env())
    rows = [
        row(
            f"{figure} [moto in-process]",
            median(samples["offload"]),
            median(samples["bare"]),
            None,
            note=f"mock_aws, median of {rounds} each",
            variant="moto in-process",
        )
    ]
    for variant, delays in _variants().items():
        with _resources(delays) as (_, env):
            samples = _enqueue_samples("server", rounds, env)
        where = "moto server process" if delays is None else describe(delays)
        rows.append(
            row(
                f"{figure} [{variant}]",
                median(samples["offload"]),
                median(samples["bare"]),
                None if delays is None else 1.1,
                note=f"{where}, median of {rounds} each",
                variant=variant,
            )
        )
        rows.append(
            row(
                f"{cpu_figure} [{variant}]",
                median(samples["offload_cpu"]),
                median(samples["bare_cpu"]),
                1.5,
                note=f"process CPU time (every thread) around the handler call; {where}",
                variant=variant,
            )
        )
    return rows


# --------------------------------------------------------------------------- (c) burst
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

    with moto_server(logs / "moto.log") as moto_url, environ(BENCH_ENV):
        stack = provision(moto_url, ROOT / "template.yaml", {"Stage": "dev"})
        extra = {
            "AWS_ENDPOINT_URL": moto_url,
            "OFFLOAD_TASK_MODULES": "benchmarks.subjects.slow_task",
        }
        api_env = child_env(**{**stack.environment("ApiFunction"), **extra})
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
    small = quick()
    return [
        *measured(
            "(a) cold start of api.main", lambda: cold_start_figures(2 if small else COLD_RUNS)
        ),
        *measured("(a) built ApiFunction", lambda: built_figures(1 if small else BUILT_RUNS)),
        *measured(
            "(b) POST /emails through Mangum",
            lambda: enqueue_figures(40 if small else ENQUEUE_ROUNDS),
        ),
        *measured(
            "(c) slowest GET /ping during a burst",
            lambda: burst_figures(1 if small else BURST_ROUNDS),
        ),
    ]
