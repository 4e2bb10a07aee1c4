"""FastAPI's own background-task tutorials, with only the import changed, pass FastAPI's own
tests: in-process (plain uvicorn, no queue configured) and durably (SQS in moto, then the
TaskWorker's handler, as Lambda would run it).

The tutorials are FastAPI's files (tests/integration/fastapi_tutorial/, MIT: see its
__init__). Each test writes a copy whose `from fastapi import ..., BackgroundTasks, ...` imports
BackgroundTasks from offload.fastapi instead, and imports it as an application's module. The
checks after the request are those of FastAPI's tests/test_tutorial/test_background_tasks/.
The tutorial's functions are plain, undecorated: the worker imports them by name because the
deployment lists their module in OFFLOAD_TASK_MODULES.
"""

import difflib
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from offload.local.lambda_runtime import LambdaContext, sqs_event
from offload.worker import sqs_handler
from tests.support import AwsStack, JsonLogs, compose, installed, task_message

TUTORIALS = Path(__file__).parent / "fastapi_tutorial"
FASTAPI_IMPORT = "from fastapi import "
OFFLOAD_IMPORT = "from offload.fastapi import BackgroundTasks\n"

# FastAPI's tests: the request, its answer, and what log.txt then holds.
NOTIFY = "/send-notification/foo@example.com"
CASES = {
    "tutorial001_py310": (
        NOTIFY,
        {"message": "Notification sent in the background"},
        "notification for foo@example.com: some notification",
    ),
    # The query's task is added by a sub-dependency, the other by the endpoint itself.
    "tutorial002_py310": (
        f"{NOTIFY}?q=some-query",
        {"message": "Message sent"},
        "found query: some-query\nmessage to foo@example.com",
    ),
    "tutorial002_an_py310": (
        f"{NOTIFY}?q=some-query",
        {"message": "Message sent"},
        "found query: some-query\nmessage to foo@example.com",
    ),
}
TASKS_ADDED = {"tutorial001_py310": 1, "tutorial002_py310": 2, "tutorial002_an_py310": 2}

Loader = Callable[[str], ModuleType]


def drop_in(source: str) -> str:
    """The tutorial with Offload's BackgroundTasks: only where it is imported from changes."""
    lines = []
    for line in source.splitlines(keepends=True):
        names = [n.strip() for n in line.removeprefix(FASTAPI_IMPORT).split(",")]
        if line.startswith(FASTAPI_IMPORT) and "BackgroundTasks" in names:
            rest = ", ".join(n for n in names if n != "BackgroundTasks")
            lines += [f"{FASTAPI_IMPORT}{rest}\n", OFFLOAD_IMPORT]
        else:
            lines.append(line)
    return "".join(lines)


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    """Import a tutorial's drop-in copy as `dropin_<tutorial>`, from the app's own directory;
    the current directory (where the tutorial writes log.txt) is a fresh one."""
    code, workdir = tmp_path / "app", tmp_path / "workdir"
    code.mkdir()
    workdir.mkdir()
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.chdir(workdir)
    loaded: list[str] = []

    def load(tutorial: str) -> ModuleType:
        name = f"dropin_{tutorial}"
        (code / f"{name}.py").write_text(drop_in((TUTORIALS / f"{tutorial}.py").read_text()))
        importlib.invalidate_caches()
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def fastapis_check(client: TestClient, tutorial: str) -> None:
    """FastAPI's test of the tutorial: the request and its answer (log.txt: see below)."""
    path, answer, _ = CASES[tutorial]
    log = Path("log.txt")
    if log.is_file():
        log.unlink()  # pragma: no cover
    response = client.post(path)
    assert response.status_code == 200, response.text
    assert response.json() == answer


def fastapis_log_check(tutorial: str, *, in_order: bool = True) -> None:
    """FastAPI's check of log.txt; `in_order=False`: the same lines, in any order (a worker
    runs a batch's records at the same time, and SQS keeps no order between messages)."""
    with open("./log.txt") as f:
        written = f.read()
    if in_order:
        assert CASES[tutorial][2] in written
    else:
        assert sorted(written.splitlines()) == sorted(CASES[tutorial][2].splitlines())


@pytest.mark.parametrize("tutorial", CASES)
def test_the_copy_differs_from_fastapis_tutorial_only_in_the_import(tutorial: str) -> None:
    source = (TUTORIALS / f"{tutorial}.py").read_text()

    changed = [
        line
        for line in difflib.ndiff(source.splitlines(), drop_in(source).splitlines())
        if line.startswith(("- ", "+ "))
    ]

    assert changed[-1] == f"+ {OFFLOAD_IMPORT.strip()}"
    assert all(line[2:].startswith(FASTAPI_IMPORT) for line in changed[:-1]), changed
    assert len(changed) == 3


@pytest.mark.parametrize("tutorial", CASES)
def test_fastapis_own_background_tasks_pass_the_same_checks(
    env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tutorial: str
) -> None:
    # The baseline: FastAPI's unchanged tutorial, so the checks below are FastAPI's own.
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"tests.integration.fastapi_tutorial.{tutorial}")

    fastapis_check(TestClient(module.app), tutorial)
    fastapis_log_check(tutorial)


@pytest.mark.parametrize("tutorial", CASES)
def test_in_process_without_a_queue(
    env: None, load: Loader, json_logs: JsonLogs, tutorial: str
) -> None:
    # Given plain uvicorn-style serving: no queue URL, no table (env: no OFFLOAD_*)
    client = TestClient(load(tutorial).app)

    # When FastAPI's test runs, it passes: the tasks ran in-process after the response
    fastapis_check(client, tutorial)
    fastapis_log_check(tutorial)

    # And they ran through Offload, which said they were not durable
    assert json_logs.find(
        "OFFLOAD_TASK_QUEUE_URL is not set: running tasks in-process, NOT durable "
        "(set the queue URLs, or run the local system: `offload run`)"
    )
    assert len(json_logs.find("in-process task succeeded")) == TASKS_ADDED[tutorial]


@pytest.mark.parametrize("tutorial", CASES)
def test_durably_through_sqs_and_the_task_worker(
    aws: AwsStack, load: Loader, monkeypatch: pytest.MonkeyPatch, tutorial: str
) -> None:
    # Given the deployment lists the app's module in OFFLOAD_TASK_MODULES (API and workers)
    module = f"dropin_{tutorial}"
    modules = f"{aws.environment['OFFLOAD_TASK_MODULES']},{module}"
    monkeypatch.setenv("OFFLOAD_TASK_MODULES", modules)
    compose(monkeypatch)
    client = TestClient(load(tutorial).app)

    # When FastAPI's test makes its request, the answer is FastAPI's
    fastapis_check(client, tutorial)

    # Then nothing has run yet: the tasks are on SQS, named by module and function, and queued
    # (no record until a worker claims them: their ids answer for them)
    assert not Path("log.txt").exists()
    messages = aws.receive_all(aws.task_queue, visibility=30)
    tasks = [task_message(m) for m in messages]
    assert len(tasks) == TASKS_ADDED[tutorial]
    assert {t.kind for t in tasks} <= {f"{module}:write_notification", f"{module}:write_log"}
    for message in tasks:
        assert aws.task(message.task_id) is None

    # And a worker that never imported the app imports the module by name and runs them
    sys.modules.pop(module)
    event = sqs_event(messages, installed().sqs.queue_arn(aws.task_queue))  # type: ignore[arg-type]
    result = sqs_handler("tasks")(event, LambdaContext("offload-dev-TaskWorker", 30))

    assert result == {"batchItemFailures": []}
    fastapis_log_check(tutorial, in_order=False)
    for message in tasks:
        assert aws.task(message.task_id)["state"] == "succeeded"  # type: ignore[index]
