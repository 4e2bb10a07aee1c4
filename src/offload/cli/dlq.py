"""`offload dlq list|redrive|purge`: the dead-letter queues of the running local system, or of a
deployed stack with --stack NAME (offload.dlq does the work; see its docstring for redrive)."""

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table

from offload.cli.api import Session
from offload.cli.output import (
    ExitCode,
    PeopleLogFormatter,
    cut,
    fail,
    print_json,
    say,
    stdout,
    unreachable_errors,
)
from offload.queues import QUEUES

if TYPE_CHECKING:
    from offload.dlq import QueuePair
    from offload.wiring import Offload

app = typer.Typer(
    help="The dead-letter queues: list, redrive or purge (the local system by default).",
    no_args_is_help=True,
)

HINT = (
    "is the local system running (`offload run`)? With other ports, export OFFLOAD_MOTO_PORT; "
    "for AWS, pass --stack NAME with your credentials and region"
)


def _queue_name(name: str | None) -> str | None:
    names = [q.name for q in QUEUES]
    if name is not None and name not in names:
        raise typer.BadParameter(f"{name!r} is not one of {', '.join(names)}")
    return name


Queue = Annotated[
    str | None,
    typer.Option(
        callback=_queue_name,
        help=f"Only this queue's DLQ: {', '.join(q.name for q in QUEUES)} (default: every one).",
        show_default=False,
    ),
]
Stack = Annotated[
    str | None,
    typer.Option(
        help="A deployed stack: its outputs name the queues; AWS as your credentials and "
        "region say. Without it: the running local system (OFFLOAD_MOTO_PORT).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]


@contextmanager
def queues(
    ctx: typer.Context, stack: str | None, queue: str | None
) -> "Iterator[tuple[Offload, list[QueuePair]]]":
    """The Offload to work through and the chosen queue pairs. The AWS and OFFLOAD_* variables
    set for the local system or the stack are this command's only: restored afterwards."""
    from botocore.exceptions import ClientError

    from offload.aws.errors import error_code
    from offload.dlq import LOCAL_STACK, local_system_environment, queue_pairs, stack_environment
    from offload.observability import logger
    from offload.settings import Settings
    from offload.wiring import build

    session: Session = ctx.obj
    saved = dict(os.environ)
    # The tool's log lines (a dead letter left or dropped) go with the other lines for people,
    # to stderr: stdout is the listing or the JSON.
    # (Swapped, not setStream: that flushes the old stream, which may be closed by now.)
    # One line each, for people (PeopleLogFormatter), not Powertools' JSON.
    handler = logger.registered_handler
    stream = handler.stream if isinstance(handler, logging.StreamHandler) else None
    formatter = handler.formatter
    if stream is not None:
        cast("logging.StreamHandler[Any]", handler).stream = sys.stderr
        handler.setFormatter(PeopleLogFormatter())
    try:
        if session.offload is not None:
            offload = session.offload
        else:
            if stack is None:
                os.environ.update(local_system_environment())
            try:
                os.environ.update(stack_environment(stack or LOCAL_STACK))
            except ClientError as error:
                if error_code(error) == "ValidationError":  # CloudFormation: no such stack
                    fail(f"no stack {stack or LOCAL_STACK}: {error}", ExitCode.NOT_FOUND)
                raise
            offload = build(Settings())
        try:
            pairs = queue_pairs(offload.settings, queue)
        except LookupError as error:
            fail(str(error), ExitCode.USAGE)
        yield offload, pairs
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if stream is not None:
            cast("logging.StreamHandler[Any]", handler).stream = stream
            handler.setFormatter(formatter)


@app.command("list")
@unreachable_errors(HINT)
def list_messages(
    ctx: typer.Context,
    queue: Queue = None,
    stack: Stack = None,
    as_json: JsonOption = False,
) -> None:
    """Each dead letter: its task, kind, attempts and last error. They stay in the DLQ."""
    from offload.dlq import list_dead_letters

    with queues(ctx, stack, queue) as (offload, pairs):
        listed = [(pair, list_dead_letters(offload, pair)) for pair in pairs]
    if as_json:
        print_json(
            [
                {
                    "queue": pair.name,
                    "dlq": _name(pair),
                    "count": len(letters),
                    "messages": [asdict(letter) for letter in letters],
                }
                for pair, letters in listed
            ]
        )
        return
    console = stdout()
    for pair, letters in listed:
        console.print(f"[bold]{pair.name}[/]: {len(letters)} message(s) in {_name(pair)}")
        if not letters:
            continue
        table = Table(box=None, header_style="bold", pad_edge=False)
        # Kind and error are cut to fit (wrappable columns shrink; the others keep their width)
        table.add_column("TASK ID", no_wrap=True, min_width=36)
        table.add_column("KIND", min_width=8)
        table.add_column("ATTEMPTS", justify="right", no_wrap=True)
        table.add_column("LAST ERROR", min_width=10)
        for letter in letters:
            table.add_row(
                cut(letter.task_id),
                cut(letter.kind),
                cut(letter.attempts),
                cut(letter.error),
            )
        console.print(table)


def _name(pair: "QueuePair") -> str:
    return pair.dlq_url.rsplit("/", 1)[-1]


@app.command("redrive")
@unreachable_errors(HINT)
def redrive(
    ctx: typer.Context,
    queue: Queue = None,
    stack: Stack = None,
    as_json: JsonOption = False,
) -> None:
    """Dead tasks back to their queue, to run again.

    Copies of finished tasks are dropped; what cannot be reset stays in the DLQ, counted with
    the reason.
    """
    from offload.dlq import redrive as redrive_pair

    reports = []
    with queues(ctx, stack, queue) as (offload, pairs):
        for pair in pairs:
            report = redrive_pair(offload, pair)
            reports.append((pair.name, report))
            if not as_json:
                stdout().print(report.summary(pair.name), markup=False, soft_wrap=True)
    if as_json:
        print_json(
            [
                {
                    "queue": name,
                    "redriven": report.redriven,
                    "dropped": report.dropped,
                    "left": dict(report.left),
                    "truncated": report.truncated,
                }
                for name, report in reports
            ]
        )


@app.command("purge")
@unreachable_errors(HINT)
def purge(
    ctx: typer.Context,
    queue: Queue = None,
    stack: Stack = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Purge without asking.")] = False,
) -> None:
    """Delete every message in the DLQ(s); asks first unless --yes (exit 1 if not confirmed)."""
    from offload.dlq import purge as purge_pair

    with queues(ctx, stack, queue) as (offload, pairs):
        names = ", ".join(pair.name for pair in pairs)
        if not yes:
            try:
                confirmed = typer.confirm(f"Delete every message in the DLQ of {names}?")
            except typer.Abort:  # no terminal to ask (stdin at its end)
                confirmed = False
            if not confirmed:
                say("nothing purged (pass --yes to purge without asking)")
                raise typer.Exit(ExitCode.FAILED)
        for pair in pairs:
            purge_pair(offload, pair)
            stdout().print(f"{pair.name}: DLQ purged", markup=False)
