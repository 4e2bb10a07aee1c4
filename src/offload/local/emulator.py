"""Built functions under the Lambda Runtime Interface Emulator: no container, python3.13.

`sam local invoke` runs a function's package (`sam build` output) in a container, where the
Runtime Interface Emulator (RIE) plays the Lambda service and `awslambdaric` runs the handler.
The SAM CLI package ships the same RIE binary (`samcli/local/rapid/aws-lambda-rie-<arch>`), and
`awslambdaric` is on PyPI: here they run the package directly, with a python3.13 that sees only
the package, the Lambda runtime's own packages (awslambdaric and the AWS SDK, cached in a
directory of their own, never in the package) and the standard library.
"""

import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import requests
from samtranslator.yaml_helper import yaml_parse

RIC_VERSION = "4.2.2"  # awslambdaric
# What the Lambda Python runtime provides besides awslambdaric: the packages never shipped.
RUNTIME_PROVIDED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "urllib3",
    "python-dateutil",
    "six",
)
LAMBDA_PYTHON = (3, 13)
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# The RIE's own lines ("01 Dec 2026 06:41:54,662 [INFO] (rapid) ..."): shown with --verbose.
RAPID_LINE = re.compile(r"^\d\d \w{3} \d{4} [\d:,]+ \[\w+\] \(rapid\)")

Output = Callable[[str], None]


class EmulatorError(RuntimeError):
    """What is needed to run a built function is missing; the message says how to get it."""


def host_architecture() -> str:
    """This machine's architecture, spelled as Lambda spells it."""
    machine = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[machine]


def _platform_tag(architecture: str) -> str:
    return {"x86_64": "x86_64-manylinux2014", "arm64": "aarch64-manylinux2014"}[architecture]


# ---------------------------------------------------------------------------------- the tools
def find_sam(project: Path) -> Path:
    """The SAM CLI: $OFFLOAD_SAM, the project's `make tools` copy, or `sam` on PATH."""
    candidates = [os.environ.get("OFFLOAD_SAM"), str(project / ".tools/sam/bin/sam")]
    candidates.append(shutil.which("sam"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise EmulatorError(
        "no SAM CLI found: run `make tools`, pip install aws-sam-cli, or set OFFLOAD_SAM"
    )


def find_rie(sam: Path) -> Path:
    """The RIE binary for this machine, inside the SAM CLI's installation."""
    name = f"aws-lambda-rie-{host_architecture()}"
    environment = sam.parent.parent  # a virtual environment: bin/sam, lib/pythonX.Y/...
    found = sorted(environment.glob(f"lib/python3*/site-packages/samcli/local/rapid/{name}"))
    if not found:
        raise EmulatorError(f"{name} not found in the SAM CLI at {environment}")
    return found[-1]


def find_python() -> Path:
    """A python3.13 (Lambda's runtime): $OFFLOAD_LAMBDA_PYTHON, pyenv's, or python3.13 on PATH."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [os.environ.get("OFFLOAD_LAMBDA_PYTHON")]
    candidates += [str(p) for p in sorted(pyenv_root.glob("versions/3.13*/bin/python3.13"))]
    candidates.append(shutil.which("python3.13"))
    for candidate in candidates:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.executable, *sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0:
            executable, major, minor = probe.stdout.split()
            if (int(major), int(minor)) == LAMBDA_PYTHON:
                return Path(executable)
    raise EmulatorError(
        "no python3.13 found: install one (pyenv install 3.13) or set OFFLOAD_LAMBDA_PYTHON"
    )


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.is_file() else shutil.which("uv")


def runtime_requirements() -> list[str]:
    """awslambdaric, and the AWS SDK at the versions this environment runs."""
    pins = [f"awslambdaric=={RIC_VERSION}"]
    for name in RUNTIME_PROVIDED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def runtime_dir(python: Path, say: Output) -> Path:
    """The Lambda runtime's own packages for python3.13 on this machine, installed once into a
    cache directory (never into a function's package): what /var/runtime holds on Lambda."""
    requirements = runtime_requirements()
    architecture = host_architecture()
    key = hashlib.sha256(" ".join([architecture, *requirements]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "offload"
    target = cache / f"lambda-runtime-py313-{architecture}-{key}"
    with _locked(cache / f"{target.name}.lock"):
        if target.is_dir():
            return target
        say(f"installing the Lambda runtime's packages for python3.13 into {target}")
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=cache))
        uv = _uv()
        if uv:
            command = [uv, "pip", "install", "--quiet", "--python-version", "3.13"]
            command += ["--python-platform", _platform_tag(architecture)]
        else:
            command = [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ]
        command += ["--only-binary", ":all:", "--target", str(staging), *requirements]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmulatorError(f"could not install {' '.join(requirements)}:\n{result.stderr}")
        staging.rename(target)
    return target


# ---------------------------------------------------------------------------------- the build
def _function_architectures(template: Path) -> set[str]:
    sam = yaml_parse(template.read_text())
    default = sam.get("Globals", {}).get("Function", {}).get("Architectures", ["x86_64"])
    return {
        str(resource.get("Properties", {}).get("Architectures", default)[0])
        for resource in sam["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def build_dir(template: Path) -> Path:
    """Where the packages this machine can run are built: `make build`'s .aws-sam/build when the
    template's architecture is this machine's, else .aws-sam/build-<this machine's>."""
    host = host_architecture()
    if _function_architectures(template) == {host}:
        return template.parent / ".aws-sam" / "build"
    return template.parent / ".aws-sam" / f"build-{host}"


def sources_digest(template: Path, code_dirs: list[Path]) -> str:
    """What a build is made from: the template and every file of the functions' code
    directories (bytecode and egg-info left out)."""
    digest = hashlib.sha256(template.read_bytes())
    for directory in sorted(set(code_dirs)):
        for path in sorted(directory.rglob("*")):
            parts = path.relative_to(directory).parts
            if not path.is_file() or "__pycache__" in parts or path.suffix == ".pyc":
                continue
            if any(part.endswith(".egg-info") for part in parts):
                continue
            digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


STAMP = ".offload-sources"


def sam_build(sam: Path, template: Path, directory: Path, *functions: str) -> None:
    """`sam build` of the template's functions (or only FUNCTIONS) into DIRECTORY, with the
    wheels for this machine's architecture."""
    env = dict(os.environ)
    env["LAMBDA_PLATFORM"] = _platform_tag(host_architecture())  # src/Makefile's wheel platform
    env.setdefault("SAM_CLI_TELEMETRY", "0")
    uv = _uv()
    if uv:
        env.setdefault("UV", uv)
    command = [str(sam), "build", *functions, "--template", str(template)]
    command += ["--build-dir", str(directory)]
    result = subprocess.run(
        command, cwd=template.parent, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise EmulatorError(f"sam build failed:\n{result.stdout}\n{result.stderr}")


def ensure_built(template: Path, functions: list[str], sam: Path, say: Output) -> Path:
    """The built packages, from `sam build`: rebuilt when missing or when a source changed."""
    from offload.local.stack import code_dirs

    directory = build_dir(template)
    digest = sources_digest(template, list(code_dirs(template).values()))
    with _locked(directory.parent / f"{directory.name}.lock"):
        stamp = directory / STAMP
        built = all((directory / name).is_dir() for name in functions)
        if stamp.is_file() and stamp.read_text() == digest and built:
            return directory
        reason = "sources changed" if stamp.is_file() else "no build yet"
        where = directory.relative_to(template.parent)
        say(f"sam build ({reason}) into {where} for {host_architecture()}")
        started = time.monotonic()
        sam_build(sam, template, directory)
        stamp.write_text(digest)
        say(f"built in {time.monotonic() - started:.1f} s")
    return directory


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
