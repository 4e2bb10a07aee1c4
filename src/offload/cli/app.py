"""The `offload` command's Typer app: the root options, `run`, `emails`, `upload`, `invoke`, and
the `tasks` and `dlq` groups (offload.cli.tasks, offload.cli.dlq)."""

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel

from offload.cli import dlq, tasks
from offload.cli.api import UNREACHABLE_HINT, Session, default_api_url
from offload.cli.output import ExitCode, fail, print_json, say, stdout, unreachable_errors

app = typer.Typer(
    name="offload",
    help="Offload's command line: the local system, its tasks, emails, uploads and "
    "dead-letter queues. Exit codes: 0 ok, 1 failed, 2 usage, 3 unreachable, 4 not found, "
    "5 conflict, 6 denied.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a traceback must not print the token
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(tasks.app, name="tasks")
app.add_typer(dlq.app, name="dlq")


def _moto_port() -> int:
    return int(os.environ.get("OFFLOAD_MOTO_PORT", "4566"))


@app.callback()
def root(
    ctx: typer.Context,
    api: Annotated[
        str,
        typer.Option(
            envvar="OFFLOAD_API_URL",
            default_factory=default_api_url,
            help="The API that the task and upload commands call (default: the local "
            "system's, http://127.0.0.1:$OFFLOAD_API_PORT, port 8000).",
            show_default=False,
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="OFFLOAD_API_TOKEN",
            help="Sent as `Authorization: Bearer TOKEN`: the token `offload run` was started "
            "with, or a JWT on AWS.",
            show_default=False,
        ),
    ] = None,
) -> None:
    # An object passed in (CliRunner.invoke(app, ..., obj=offload)) is what the dlq commands
    # work through.
    ctx.obj = Session(api_url=api, token=token or None, offload=ctx.obj)


@app.command()
def run(
    *,
    host: Annotated[
        str, typer.Option(envvar="OFFLOAD_LOCAL_HOST", help="The address to serve on.")
    ] = "127.0.0.1",
    api_port: Annotated[
        int, typer.Option(envvar="OFFLOAD_API_PORT", help="The API's port.")
    ] = 8000,
    moto_port: Annotated[
        int, typer.Option(envvar="OFFLOAD_MOTO_PORT", help="The embedded AWS's port.")
    ] = 4566,
    sender: Annotated[
        str,
        typer.Option(
            envvar="OFFLOAD_SENDER_EMAIL", help="The From address, verified in the embedded SES."
        ),
    ] = "noreply@example.com",
    instances: Annotated[
        int, typer.Option(min=1, help="The most poller processes per worker.")
    ] = 2,
    template: Annotated[
        Path,
        typer.Option(help="Your SAM template; its functions' code is imported from their CodeUri."),
    ] = Path("template.yaml"),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every worker log line.")
    ] = False,
    built: Annotated[
        bool,
        typer.Option(
            "--built",
            help="Run the built packages (sam build, rebuilt when a source changed) under the "
            "Lambda runtime emulator with python3.13, instead of importing the source.",
        ),
    ] = False,
    api_token: Annotated[
        str | None,
        typer.Option(
            envvar="OFFLOAD_API_TOKEN",
            help="Require `Authorization: Bearer TOKEN` on every route but /health.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the whole system on this machine: moto, the API and the workers. No AWS account."""
    if api_token is None:
        api_token = os.environ.get("OFFLOAD_API_TOKEN")  # set but empty: Click reads it as unset
    if api_token is not None and not api_token.strip():
        # Empty would otherwise mean "no token": an open API where one was asked for.
        fail(
            "--api-token (or OFFLOAD_API_TOKEN) is empty: give a token, or unset "
            "OFFLOAD_API_TOKEN to run the API without one",
            ExitCode.USAGE,
        )
    template = template.resolve()
    if not template.is_file():
        fail(f"no SAM template at {template}: pass --template path/to/it", ExitCode.USAGE)
    from offload.local.runner import Options
    from offload.local.runner import run as run_system

    run_system(
        Options(
            host=host,
            api_port=api_port,
            moto_port=moto_port,
            sender=sender,
            instances=instances,
            verbose=verbose,
            environment={"OFFLOAD_API_TOKEN": api_token} if api_token else None,
            template=template,
            built=built,
        )
    )


EMAILS_HINT = "start the local system with `offload run` (other ports: export OFFLOAD_MOTO_PORT)"


@app.command()
@unreachable_errors(EMAILS_HINT)
def emails(
    moto_url: Annotated[
        str | None,
        typer.Option(
            help="The local system's embedded AWS (default: http://127.0.0.1:$OFFLOAD_MOTO_PORT).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")] = False,
) -> None:
    """The emails the local system's embedded SES has sent, oldest first."""
    import httpx

    url = (moto_url or f"http://127.0.0.1:{_moto_port()}").rstrip("/")
    answer = httpx.get(f"{url}/moto-api/data.json", timeout=10)
    if answer.status_code != 200:
        fail(f"{url} answered {answer.status_code}: is it the local system?", ExitCode.FAILED)
    sent: list[dict[str, Any]] = answer.json().get("ses", {}).get("Message", [])
    if as_json:
        print_json(sent)
        return
    console = stdout()
    if not sent:
        console.print("no emails sent yet")
    for message in sent:
        to = ", ".join(message.get("destinations", {}).get("ToAddresses", []))
        head = (
            f"[bold]From:[/] {escape(str(message.get('source')))}\n"
            f"[bold]To:[/] {escape(to)}\n"
            f"[bold]Subject:[/] {escape(str(message.get('subject')))}"
        )
        console.print(Panel(f"{head}\n\n{escape(str(message.get('body', '')))}", expand=False))


@app.command()
@unreachable_errors(UNREACHABLE_HINT)
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="A CSV or TSV file, or .gz of one."
        ),
    ],
    timeout: Annotated[
        float, typer.Option(help="The longest wait for the worker, in seconds.")
    ] = 600,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final GET /uploads/{id} as JSON.")
    ] = False,
) -> None:
    """Upload a CSV/TSV file with a progress bar, wait for the worker, print its summary.

    Exit 1 if the upload failed.
    """
    from offload.cli.upload import print_result
    from offload.cli.upload import upload as upload_file

    if file.stat().st_size == 0:
        fail(f"{file} is empty: nothing to upload", ExitCode.USAGE)
    session: Session = ctx.obj
    answer = upload_file(file, session.api(), timeout=timeout, on_state=say)
    if as_json:
        print_json(answer)
    else:
        print_result(answer)
    if answer["state"] != "succeeded":
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def invoke(
    function: Annotated[str, typer.Argument(help="The function's logical id in the template.")],
    *,
    event: Annotated[
        Path | None,
        typer.Option(
            "--event",
            "-e",
            exists=True,
            dir_okay=False,
            help="The JSON event file (default: read from stdin).",
            show_default=False,
        ),
    ] = None,
    template: Annotated[Path, typer.Option(help="The SAM template.")] = Path("template.yaml"),
    moto_port: Annotated[
        int,
        typer.Option(
            envvar="OFFLOAD_MOTO_PORT",
            help="The running local system's embedded AWS, used when it answers there; else "
            "one is started for the invoke.",
        ),
    ] = 4566,
    sender: Annotated[
        str, typer.Option(envvar="OFFLOAD_SENDER_EMAIL", help="The SES sender.")
    ] = "noreply@example.com",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the emulator's lines.")
    ] = False,
) -> None:
    """Run a function's built package with one event, as `sam local invoke`, no container.

    The response goes to stdout; exit 1 if the function errored.
    """
    from offload.local.invoke import invoke as invoke_function

    template = template.resolve()
    if not template.is_file():
        fail(f"no SAM template at {template}: pass --template path/to/it", ExitCode.USAGE)
    payload = event.read_bytes() if event else sys.stdin.buffer.read()
    try:
        json.loads(payload)
    except ValueError as error:
        fail(f"the event is not JSON: {error}", ExitCode.USAGE)
    code = invoke_function(
        template, function, payload, moto_port=moto_port, sender=sender, verbose=verbose
    )
    raise typer.Exit(code)
