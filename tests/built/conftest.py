"""The built packages (`sam build`, one per function) under the Lambda runtime emulator, with
python3.13 and no container, against the template's stack in moto.

The build is cached between runs (rebuilt when a source changes: offload.local.emulator). With
no SAM CLI or python3.13 these tests skip, unless OFFLOAD_REQUIRE_BUILT=1 (`make test-built`,
which CI runs): then they fail.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from offload.local.build import EmulatorError
from offload.local.emulator import Emulator, Runtime, built_function
from offload.local.runner import LOCAL_CREDENTIALS, provision_local
from offload.local.stack import LocalStack
from tests.support import SENDER, TEMPLATE, free_port


@dataclass
class Artifacts:
    """Warm emulated instances of the built functions, on one moto stack."""

    built: Runtime
    moto_url: str
    stack: LocalStack
    instances: dict[str, Emulator] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    def emulator(self, function: str, package: Path | None = None) -> Emulator:
        """A started instance of FUNCTION (of a package given instead of the build: a new one)."""
        if package is None and function in self.instances:
            return self.instances[function]
        local = {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url}
        spec = built_function(function, self.stack.functions[function], self.built.build, local)
        if package is not None:
            spec.package = package
        emulator = self.built.emulator(spec, self.output.append)
        if package is None:
            self.instances[function] = emulator
        return emulator


@pytest.fixture(scope="session")
def built() -> Runtime:
    try:
        return Runtime.prepare(TEMPLATE, print)
    except EmulatorError as error:
        if os.environ.get("OFFLOAD_REQUIRE_BUILT") == "1":
            raise
        pytest.skip(f"the built packages cannot run here ({error}); `make test-built` needs them")


@pytest.fixture(scope="session")
def artifacts(built: Runtime) -> Iterator[Artifacts]:
    """The template's stack in a moto server of its own process (the other tiers' mock_aws
    shares this process's moto backends), and the built functions' instances."""
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    found = None
    try:
        wait_for_port(port)
        config = {"lambda": {"use_docker": False}}
        requests.post(f"{url}/moto-api/config", json=config, timeout=5).raise_for_status()
        with pytest.MonkeyPatch.context() as monkeypatch:
            for name, value in LOCAL_CREDENTIALS.items():
                monkeypatch.setenv(name, value)
            found = Artifacts(built, url, provision_local(url, TEMPLATE, SENDER))
        yield found
    finally:
        for emulator in found.instances.values() if found else []:
            emulator.stop()
        moto.terminate()
        moto.wait(timeout=10)


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
