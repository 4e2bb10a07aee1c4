"""What runs a built function here: the RIE (in the SAM CLI), a python3.13, the Lambda
runtime's own packages, and the packages `sam build` makes for this machine's architecture."""

import fcntl
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
