"""Start the local system (`offload run`) in a subprocess on free ports, as a user would, and
stop it with every process it started."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port

START_TIMEOUT = 120.0
# The runner prints this once moto is provisioned, the pollers are started and the API answers.
READY = "Offload is running locally."


def descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc), so that none outlives the session."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@dataclass
class LocalSystem:
    api_url: str
    moto_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _stop(process: "subprocess.Popen[bytes]") -> None:
    family = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the runner stops its children, then moto
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for pid in family:  # anything the runner failed to stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def clean_environment() -> dict[str, str]:
    """This environment without AWS and Offload settings: the runner sets those itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OFFLOAD_"))}
    env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


@contextlib.contextmanager
def running(
    offload: list[str], *args: str, cwd: Path, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[LocalSystem]:
    """`<offload> run <args>` on free ports, from cwd, until it is ready; stopped on exit."""
    api_port, moto_port = free_port(), free_port()
    command = [
        *offload, "run",
        "--api-port", str(api_port),
        "--moto-port", str(moto_port),
        "--instances", "1",
        *args,
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(clean_environment() if env is None else env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    system = LocalSystem(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{moto_port}", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while READY not in system.output():
            if process.poll() is not None:
                pytest.fail(f"the local system exited ({process.returncode}):\n{system.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the local system did not start in time:\n{system.output()}")
            time.sleep(0.1)
        yield system
    finally:
        _stop(process)
