"""Built functions under the Lambda Runtime Interface Emulator: no container, python3.13.

`sam local invoke` runs a function's package (`sam build` output) in a container, where the
Runtime Interface Emulator (RIE) plays the Lambda service and `awslambdaric` runs the handler.
The SAM CLI package ships the same RIE binary (`samcli/local/rapid/aws-lambda-rie-<arch>`), and
`awslambdaric` is on PyPI: here they run the package directly, with a python3.13 that sees only
the package, the Lambda runtime's own packages (awslambdaric and the AWS SDK, cached in a
directory of their own, never in the package) and the standard library (offload.local.build).
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import requests

from offload.local.build import (
    EmulatorError,
    Output,
    ensure_built,
    find_python,
    find_rie,
    find_sam,
    runtime_dir,
)

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# The RIE's own lines ("01 Dec 2026 06:41:54,662 [INFO] (rapid) ..."): shown with --verbose.
RAPID_LINE = re.compile(r"^\d\d \w{3} \d{4} [\d:,]+ \[\w+\] \(rapid\)")


# ---------------------------------------------------------------------------------- the emulator
@dataclass
class BuiltFunction:
    """One function as the template configures it, and where its package is."""

    name: str  # the template's logical id
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    package: Path


def built_function(
    name: str, configuration: Any, build: Path, environment: dict[str, str]
) -> BuiltFunction:
    """A function as its configuration (Lambda's GetFunctionConfiguration) says, its package in
    BUILD, its variables over ENVIRONMENT (the local credentials and endpoint)."""
    variables = configuration.get("Environment", {}).get("Variables", {})
    return BuiltFunction(
        name=name,
        handler=configuration["Handler"],
        timeout=int(configuration.get("Timeout", 3)),
        memory=int(configuration.get("MemorySize", 128)),
        environment={**environment, **{str(k): str(v) for k, v in variables.items()}},
        package=build / name,
    )


@dataclass
class Runtime:
    """What runs built functions on this machine (all of it found, installed and built)."""

    rie: Path
    python: Path
    runtime: Path
    build: Path

    @classmethod
    def prepare(cls, template: Path, say: Output) -> "Runtime":
        from offload.local.stack import code_dirs

        sam = find_sam(template.parent)
        rie, python = find_rie(sam), find_python()
        runtime = runtime_dir(python, say)
        build = ensure_built(template, sorted(code_dirs(template)), sam, say)
        return cls(rie=rie, python=python, runtime=runtime, build=build)

    def emulator(
        self, function: BuiltFunction, output: Output, verbose: bool = False
    ) -> "Emulator":
        return Emulator(
            function,
            rie=self.rie,
            python=self.python,
            runtime=self.runtime,
            output=output,
            verbose=verbose,
        )

    def spec(self, function: BuiltFunction) -> dict[str, Any]:
        """One instance, as JSON for a child process (offload.local.poller, .gateway)."""
        return {
            "function": {**asdict(function), "package": str(function.package)},
            "rie": str(self.rie),
            "python": str(self.python),
            "runtime": str(self.runtime),
            "build": str(self.build),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], output: Output) -> "Emulator":
        runtime = cls(
            rie=Path(spec["rie"]),
            python=Path(spec["python"]),
            runtime=Path(spec["runtime"]),
            build=Path(spec["build"]),
        )
        function = BuiltFunction(
            **{**spec["function"], "package": Path(spec["function"]["package"])}
        )
        return runtime.emulator(function, output)


@dataclass
class Invocation:
    payload: bytes
    error: bool  # the function raised (or could not start): Lambda's X-Amz-Function-Error

    def json(self) -> Any:
        return json.loads(self.payload)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def is_function_error(payload: bytes) -> bool:
    """Whether a response is the runtime's report of an error ({errorMessage, errorType})."""
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return isinstance(body, dict) and {"errorMessage", "errorType"} <= body.keys()


class Emulator:
    """One instance of a built function: the RIE on 127.0.0.1 (both its invoke address and the
    runtime API), running `python3.13 -S -m awslambdaric HANDLER` in the package directory."""

    def __init__(
        self,
        function: BuiltFunction,
        *,
        rie: Path,
        python: Path,
        runtime: Path,
        output: Output,
        verbose: bool = False,
    ) -> None:
        self.function = function
        self.rie, self.python, self.runtime = rie, python, runtime
        self.output, self.verbose = output, verbose
        self.port = _free_port()
        self.process: subprocess.Popen[str] | None = None
        self.reported = threading.Condition()
        self.reports = 0

    def environment(self) -> dict[str, str]:
        """What Lambda sets, the function's variables, and nothing of this shell's."""
        function = self.function
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(function.package),
            "LAMBDA_RUNTIME_DIR": str(self.runtime),
            # The package first, then the runtime's packages, as on Lambda (-S: no site-packages).
            "PYTHONPATH": os.pathsep.join([str(function.package), str(self.runtime)]),
            "PYTHONDONTWRITEBYTECODE": "1",  # the package is read-only on Lambda
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout),
            "AWS_LAMBDA_FUNCTION_HANDLER": function.handler,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            **function.environment,
        }

    def start(self) -> None:
        command = [
            str(self.rie),
            "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
            "--runtime-api-address", f"127.0.0.1:{_free_port()}",
            str(self.python), "-S", "-m", "awslambdaric", self.function.handler,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=self.function.package,
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        threading.Thread(
            target=self._relay, args=(self.process.stdout,), name="rie", daemon=True
        ).start()

    def _relay(self, stream: IO[str]) -> None:
        for line in stream:
            text = line.rstrip("\n")
            if self.verbose or not RAPID_LINE.match(text):
                self.output(text)
            if text.startswith("REPORT RequestId:"):
                with self.reported:
                    self.reports += 1
                    self.reported.notify_all()

    def invoke(self, event: bytes, timeout: float | None = None) -> Invocation:
        """Send one event; return once the runtime has reported on it (its REPORT line)."""
        if self.process is None:
            self.start()
        assert self.process is not None
        url = f"http://127.0.0.1:{self.port}{INVOKE_PATH}"
        deadline = time.monotonic() + 10
        before = self.reports
        wait = timeout or self.function.timeout + 30  # the function's own timeout comes first
        while True:
            try:
                response = requests.post(url, data=event, timeout=wait)
                break
            except requests.ConnectionError:  # the RIE is still starting
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise EmulatorError(
                        f"the emulator of {self.function.name} did not start "
                        f"(exit code {self.process.poll()}); its output is above"
                    ) from None
                time.sleep(0.05)
        with self.reported:
            self.reported.wait_for(lambda: self.reports > before, timeout=5)
        error = "X-Amz-Function-Error" in response.headers or is_function_error(response.content)
        return Invocation(response.content, error)

    def stop(self) -> None:
        """Stop the RIE and the runtime it started (its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
