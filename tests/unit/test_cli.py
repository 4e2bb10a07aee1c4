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
