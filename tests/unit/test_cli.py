"""The `offload` command: its subcommands, `offload dlq` handed to the DLQ tool, and a clear
refusal when the template is not where it is looked for."""

from pathlib import Path

import pytest

from offload.cli import main
from tests.support import ROOT


def test_help_lists_the_commands_but_not_the_internal_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])

    assert stopped.value.code == 0
    usage = capsys.readouterr().out
    assert "{run,emails,upload,invoke,dlq}" in usage
    assert "poll" not in usage


def test_dlq_is_the_dlq_tool_with_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["dlq", "--help"])

    assert stopped.value.code == 0
    assert "{list,redrive,purge}" in capsys.readouterr().out


def test_run_without_a_template_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a directory without template.yaml
    monkeypatch.chdir(tmp_path)

    # When the local system is started there, then it stops before starting anything
    with pytest.raises(SystemExit) as stopped:
        main(["run"])

    assert stopped.value.code == 2
    assert f"no SAM template at {tmp_path / 'template.yaml'}" in capsys.readouterr().err


def test_dlq_local_says_what_to_do_when_nothing_answers(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support import free_port

    # Given no local system on the port the tool is told about
    port = free_port()
    monkeypatch.setenv("OFFLOAD_MOTO_PORT", str(port))
    # (--local points the process at the local system: monkeypatch restores these afterwards)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")

    # When an operator lists the DLQs of the local system, then one clear line, no traceback
    assert main(["dlq", "list", "--local"]) == 2
    said = capsys.readouterr().err
    assert f"nothing answers at http://127.0.0.1:{port}" in said
    assert "offload run" in said and "OFFLOAD_MOTO_PORT" in said


def test_invoke_of_a_function_the_template_lacks_lists_its_functions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the repository's template, when a function it does not define is invoked
    monkeypatch.chdir(ROOT)
    code = main(["invoke", "NoSuchFunction", "-e", "events/api-health.json"])

    # Then nothing is built or started, and the template's functions are named
    assert code == 2
    error = capsys.readouterr().err
    assert "no function 'NoSuchFunction'" in error
    assert "ApiFunction, EmailWorker, TaskWorker, UploadWorker" in error


def test_upload_says_what_to_do_when_nothing_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support import free_port

    # Given a file, and no API on the port the tool is told about
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    api = f"http://127.0.0.1:{free_port()}"

    # When it is uploaded, then one clear line and exit 2, no traceback
    assert main(["upload", str(data), "--api", api]) == 2
    said = capsys.readouterr().err
    assert f"nothing answers at {api}" in said and "OFFLOAD_API_PORT" in said
