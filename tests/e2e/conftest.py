"""The local system (`python -m offload.local run`), started once per session on free ports."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, SENDER, free_port

START_TIMEOUT = 120.0


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


@pytest.fixture(scope="session")
def local_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    api_port, moto_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("local-system") / "run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OFFLOAD_"))}
    env["POWERTOOLS_TRACE_DISABLED"] = "true"
    command = [
        sys.executable, "-m", "offload.local", "run",
        "--api-port", str(api_port),
        "--moto-port", str(moto_port),
        "--sender", SENDER,
        "--instances", "1",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    system = LocalSystem(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{moto_port}", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the local system exited ({process.returncode}):\n{system.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the local system did not start in time:\n{system.output()}")
            try:
                if requests.get(f"{system.api_url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        # The API answers before the pollers are up; they print their line when spawned.
        while "polls" not in system.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield system
    finally:
        _stop(process)
