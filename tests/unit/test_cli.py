"""The `offload` command without a system behind it: its commands, its usage errors (exit 2),
and one clear line with exit 3 when nothing answers, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from offload.cli.output import ExitCode
from tests.support import ROOT, free_port, offload_command


def test_help_lists_the_commands() -> None:
    result = offload_command("--help")

    assert result.exit_code == 0
    for command in ("run", "tasks", "emails", "upload", "dlq", "invoke"):
        assert f" {command} " in result.stdout
    assert "poll" not in result.stdout and "gateway" not in result.stdout  # the runner's own


@pytest.mark.parametrize(
    ("group", "commands"),
    [("tasks", ("list", "show", "cancel", "retry")), ("dlq", ("list", "redrive", "purge"))],
)
def test_each_group_lists_its_commands(group: str, commands: tuple[str, ...]) -> None:
    result = offload_command(group, "--help")

    assert result.exit_code == 0
    assert all(f" {command} " in result.stdout for command in commands)


def test_python_m_offload_local_and_offload_dlq_are_the_same_command() -> None:
    for module, expected in (("offload.local", "tasks"), ("offload.dlq", "redrive")):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout


def test_run_without_a_template_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a directory without template.yaml
    monkeypatch.chdir(tmp_path)

    # When the local system is started there, then it stops before starting anything
    result = offload_command("run")

    assert result.exit_code == ExitCode.USAGE
    assert f"no SAM template at {tmp_path / 'template.yaml'}" in result.stderr


def test_run_with_an_empty_token_refuses_to_start() -> None:
    result = offload_command("run", "--api-token", " ")

    assert result.exit_code == ExitCode.USAGE
    assert "--api-token (or OFFLOAD_API_TOKEN) is empty" in result.stderr


def test_a_task_id_that_is_not_a_uuid_is_a_usage_error() -> None:
    result = offload_command("tasks", "show", "1234")

    assert result.exit_code == ExitCode.USAGE
    assert "task_id" in result.stderr


def test_dlq_with_an_unknown_queue_is_a_usage_error() -> None:
    result = offload_command("dlq", "list", "--queue", "nope")

    assert result.exit_code == ExitCode.USAGE
    assert "'nope' is not one of tasks, email, uploads" in result.stderr


def one_line(text: str) -> str:
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ("tasks", "list"),
        ("tasks", "show", "7c9e6679-7425-40de-944b-e07fc1f90ae7"),
        ("tasks", "cancel", "7c9e6679-7425-40de-944b-e07fc1f90ae7"),
        ("tasks", "retry", "7c9e6679-7425-40de-944b-e07fc1f90ae7"),
    ],
)
def test_task_commands_say_what_to_do_when_nothing_answers(command: tuple[str, ...]) -> None:
    # Given no API on the port the command is told about
    api = f"http://127.0.0.1:{free_port()}"

    # When a task command runs, then one clear line and exit 3
    result = offload_command("--api", api, *command)

    assert result.exit_code == ExitCode.UNREACHABLE
    said = one_line(result.stderr)
    assert f"nothing answers at {api}" in said and "offload run" in said


def test_upload_says_what_to_do_when_nothing_answers(tmp_path: Path) -> None:
    # Given a file, and no API at the URL from the environment
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    api = f"http://127.0.0.1:{free_port()}"

    result = offload_command("upload", str(data), env={"OFFLOAD_API_URL": api})

    assert result.exit_code == ExitCode.UNREACHABLE
    assert f"nothing answers at {api}" in one_line(result.stderr)


def test_upload_of_a_missing_or_empty_file_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.touch()

    missing = offload_command("upload", str(tmp_path / "missing.csv"))
    nothing = offload_command("upload", str(empty))

    assert missing.exit_code == ExitCode.USAGE and "does not exist" in missing.stderr
    assert nothing.exit_code == ExitCode.USAGE and "is empty: nothing to upload" in nothing.stderr


def test_emails_says_what_to_do_when_nothing_answers() -> None:
    moto = f"http://127.0.0.1:{free_port()}"

    result = offload_command("emails", "--moto-url", moto)

    assert result.exit_code == ExitCode.UNREACHABLE
    assert f"nothing answers at {moto}" in one_line(result.stderr)


def test_dlq_says_what_to_do_when_the_local_system_is_not_running(env: None) -> None:
    # Given no local system on the port the command is told about
    port = free_port()

    # When an operator lists the DLQs of the local system, then one clear line, no traceback
    result = offload_command("dlq", "list", env={"OFFLOAD_MOTO_PORT": str(port)})

    assert result.exit_code == ExitCode.UNREACHABLE
    said = one_line(result.stderr)
    assert f"nothing answers at http://127.0.0.1:{port}" in said
    assert "offload run" in said and "OFFLOAD_MOTO_PORT" in said and "--stack" in said


def test_invoke_of_a_function_the_template_lacks_lists_its_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the repository's template, when a function it does not define is invoked
    monkeypatch.chdir(ROOT)
    result = offload_command("invoke", "NoSuchFunction", "-e", "events/api-health.json")

    # Then nothing is built or started, and the template's functions are named
    assert result.exit_code == ExitCode.USAGE
    assert "no function 'NoSuchFunction'" in result.stderr
    assert "ApiFunction, EmailWorker, TaskWorker, UploadWorker" in result.stderr
