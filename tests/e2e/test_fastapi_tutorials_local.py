"""FastAPI's own background-task tutorials, with only the import changed, run durably on the
local system: the tutorial is the app of examples/minimal's template (its API function's module),
`offload run` serves it, and the TaskWorker's pollers run its plain, undecorated functions,
which the template allows by listing the module in OFFLOAD_TASK_MODULES.

The checks are FastAPI's (tests/test_tutorial/test_background_tasks/): the answer, then what
log.txt holds, here in the worker's directory (the template's, as the runner starts it).
"""

import shutil
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.local_system import running
from tests.integration.test_fastapi_tutorials import CASES, TUTORIALS, drop_in
from tests.support import ROOT

pytestmark = pytest.mark.e2e

OFFLOAD = Path(sys.executable).with_name("offload")  # the console script `make setup` installs


def app_of_the_tutorial(tutorial: str, where: Path) -> Path:
    """examples/minimal with the tutorial (import changed) as its app module, and the
    template's task allow-list naming that module; returns the template."""
    app = where / "tutorialapp"
    shutil.copytree(ROOT / "examples" / "minimal", app, ignore=shutil.ignore_patterns("__pyc*"))
    (app / "src" / "app.py").write_text(drop_in((TUTORIALS / f"{tutorial}.py").read_text()))
    template = app / "template.yaml"
    allow_list = "OFFLOAD_TASK_MODULES: tasks"
    assert allow_list in template.read_text()
    template.write_text(template.read_text().replace(allow_list, "OFFLOAD_TASK_MODULES: app"))
    return template


@pytest.mark.parametrize("tutorial", ["tutorial001_py310", "tutorial002_py310"])
def test_a_tutorial_runs_durably_on_the_local_system(tmp_path: Path, tutorial: str) -> None:
    # Given FastAPI's tutorial as an app, served by the local system
    template = app_of_the_tutorial(tutorial, tmp_path)
    path, answer, logged = CASES[tutorial]
    with running([str(OFFLOAD)], "-v", "--template", str(template), cwd=tmp_path,
                 log=tmp_path / "run.log") as system:  # fmt: skip
        # When FastAPI's test makes its request, then the answer is the tutorial's own
        response = requests.post(f"{system.api_url}{path}", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == answer

        # And the worker, not the API, writes log.txt (in its directory), as FastAPI's test reads
        log = template.parent / "log.txt"
        deadline = time.monotonic() + 30
        # (the same lines in any order: a worker runs a batch's records at the same time)
        expected = sorted(logged.splitlines())
        while not (log.is_file() and sorted(log.read_text().splitlines()) == expected):
            assert time.monotonic() < deadline, f"log.txt: {log.is_file()}\n{system.output()}"
            time.sleep(0.2)
        lines = system.output().splitlines()
        assert any("[TaskWorker#" in line and "task succeeded" in line for line in lines)
