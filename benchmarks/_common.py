"""Shared helpers: free ports, child processes, environments and medians."""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

# The same environment for subjects and baselines: no AWS account, tracing off as in tests.
BENCH_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",  # moto accepts any credentials
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
    "PYTHONUNBUFFERED": "1",
}

Row = dict[str, Any]


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set, each restored (or removed) afterwards."""
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


def run_json_child(module: str, args: list[str], env: dict[str, str], what: str) -> Any:
    """Run `python -m MODULE ARGS... OUT` in a fresh process and return the JSON it wrote to
    OUT. Its stdout (the functions' JSON logs) is dropped; if it fails, RuntimeError with the
    end of its stderr, naming `what` it measured."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        result = subprocess.run(
            [sys.executable, "-m", module, *args, str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{result.stderr[-2000:]}")
        return json.loads(out.read_text())


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without AWS_/OFFLOAD_ settings, plus BENCH_ENV and extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OFFLOAD_"))}
    env.update(BENCH_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    env.update(extra)
    return env


def quick() -> bool:
    """`make bench ARGS=--quick`: fewer rounds and smaller files, a smoke run of every figure."""
    return os.environ.get("OFFLOAD_BENCH_QUICK") == "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def row(
    figure: str,
    value: float,
    baseline: float,
    target: float | None,
    unit: str = "ms",
    note: str = "",
    variant: str = "",
) -> Row:
    """A figure against its baseline. `variant` says what AWS it ran against ("moto", "latency
    model"); the plot groups rows by it."""
    ratio = value / baseline if baseline else float("inf")
    result: Row = {
        "figure": figure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "unit": unit,
        "note": note,
        "variant": variant,
    }
    if target is not None:
        result["passed"] = ratio <= target
    return result


def failure_reason(exc: BaseException) -> str:
    """One line for a table: the exception's type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:300]


def not_measured(figure: str, reason: str) -> Row:
    """A row for a figure that could not be measured; `make bench` prints it with the reason."""
    return {"figure": figure, "value": None, "not_measured": reason}


def skipped(figure: str, reason: str) -> Row:
    """A row for a figure this machine cannot measure by design (a tool not installed): printed
    with the reason, and not a failure of the run."""
    return {"figure": figure, "value": None, "skipped": reason}


def report_failure(figure: str, exc: BaseException) -> str:
    """Print the whole traceback to stderr and return the one-line reason for the row."""
    trace = "".join(traceback.format_exception(exc))
    print(f"{figure}: not measured\n{trace}", file=sys.stderr, flush=True)
    return failure_reason(exc)


def measured(figure: str, produce: Callable[[], list[Row]]) -> list[Row]:
    """The rows `produce()` returns or, if it fails, one row saying that `figure` was not
    measured and why: one failure must not cost the other figures of the run."""
    try:
        return produce()
    except Exception as exc:
        return [not_measured(figure, report_failure(figure, exc))]


def spawn(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own session, so that stop() ends it and its children."""
    output = log.open("wb") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered on {url} within {timeout} s")


# The process behind each server URL that moto_server or latency_proxy started (server_pid).
SERVERS: dict[str, int] = {}


def server_pid(url: str) -> int | None:
    """The process id of the server (moto, the latency model) that answers on `url`."""
    return SERVERS.get(url)


def process_cpu_ms(pid: int | None) -> float | None:
    """CPU time (user + system, all threads) a process has spent so far, in ms, from
    /proc/<pid>/stat (10 ms ticks); None where there is no /proc or no such process."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


@contextmanager
def moto_server(log: Path | None = None) -> Iterator[str]:
    """moto's server in its own process on a free loopback port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = spawn(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], child_env(), log)
    SERVERS[url] = process.pid
    try:
        wait_http(f"{url}/moto-api/", process)
        httpx.post(
            f"{url}/moto-api/config", json={"lambda": {"use_docker": False}}, timeout=5
        ).raise_for_status()
        yield url
    finally:
        SERVERS.pop(url, None)
        stop(process)
