"""A FastAPI team adopts Offload: the library's wheel in a fresh virtual environment, the
example app (examples/minimal) copied outside this repository, `offload run`, and one task
until it has `succeeded` on the worker.

The environment gets the wheel with its `local` extra at the versions of requirements/dev.lock
(so that uv installs from its cache), and nothing of this repository: no PYTHONPATH, no
editable install, and the app runs from a temporary directory.
"""

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.local_system import LocalSystem, clean_environment, running
from tests.support import ROOT

pytestmark = pytest.mark.e2e

UV = Path(sys.executable).with_name("uv")  # `make setup` installs it into .venv
EXAMPLE = ROOT / "examples" / "minimal"
APP_PACKAGES = ("api", "workers", "example_app", "local", "tests")


def sh(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_wheel(workdir: Path) -> Path:
    """The wheel of a copy of this repository's sources (the tree stays untouched)."""
    source = workdir / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    sh(UV, "build", "--quiet", "--wheel", "--out-dir", workdir / "dist", source)
    [wheel] = (workdir / "dist").glob("offload-*.whl")
    return wheel


def installed_environment(workdir: Path, wheel: Path) -> Path:
    """A fresh virtual environment with `offload[local]` from the wheel; its bin directory."""
    venv = workdir / "venv"
    sh(UV, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    requirement = f"offload[local] @ {wheel.as_uri()}"
    lock = ROOT / "requirements" / "dev.lock"
    sh(UV, "pip", "install", "--quiet", "--python", python, "--constraint", lock, requirement)
    return venv / "bin"


def wait_until_final(system: LocalSystem, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(f"{system.api_url}/tasks/{task_id}", timeout=5)
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        if task["state"] in {"succeeded", "failed", "dead"} or time.monotonic() > deadline:
            return task
        time.sleep(0.2)


def test_an_app_of_its_own_runs_its_task_on_the_local_system(tmp_path: Path) -> None:
    # Given the library's wheel
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
    assert top_level == {"offload", wheel.name.split("-py3")[0] + ".dist-info"}

    # When it is installed with its local extra into a fresh environment
    bin_dir = installed_environment(tmp_path, wheel)

    # Then site-packages got one top-level package of ours, offload, and none of the app's
    packages = json.loads(
        sh(
            bin_dir / "python",
            "-c",
            "import importlib.metadata as m, importlib.util as u, json; "
            "owned = [n for n, d in m.packages_distributions().items() if 'offload' in d]; "
            f"found = [n for n in {APP_PACKAGES!r} if u.find_spec(n)]; "
            "print(json.dumps({'owned': owned, 'found': found}))",
            cwd=tmp_path,
        )
    )
    assert packages == {"owned": ["offload"], "found": []}

    # Given the example app copied outside this repository
    app = tmp_path / "myapp"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))

    # When the local system runs it, started from another directory
    log = tmp_path / "run.log"
    with running([str(bin_dir / "offload")], "-v", "--template", "myapp/template.yaml",
                 cwd=tmp_path, log=log) as system:  # fmt: skip
        answer = requests.post(f"{system.api_url}/send-notification/alice@example.com", timeout=10)
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["task_id"]

        # Then its task succeeds on the worker (the poller of the template's TaskWorker)
        task = wait_until_final(system, task_id)
        assert task["state"] == "succeeded", f"{task}\n{system.output()}"
        assert task["result"] == {"logged": "Notification sent to alice@example.com"}
        # And the banner speaks of this app: its routes, the `offload` tools, no make targets
        banner = system.output()
        assert "/send-notification/{email}" in banner and "offload emails" in banner
        assert "here: make" not in banner
        worker_lines = [line for line in system.output().splitlines() if "[TaskWorker#0]" in line]
        assert any("task succeeded" in line and task_id in line for line in worker_lines), (
            system.output()
        )
