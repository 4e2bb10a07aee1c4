"""What every subcommand shares: its exit codes, its two consoles, JSON for scripts, and the
translation of "nothing answers" and refusals into one line and a meaningful exit code."""

import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

P = ParamSpec("P")
R = TypeVar("R")


class ExitCode(IntEnum):
    """What `offload`'s exit status means, for scripts (the README lists them)."""

    OK = 0
    FAILED = 1  # the task or the operation failed: an upload that failed, a dead task waited for,
    #             a purge not confirmed, an answer the command did not expect
    USAGE = 2  # bad arguments, a missing file or template (Click's own usage errors are 2 too)
    UNREACHABLE = 3  # nothing answers at the API or the AWS endpoint; no region or credentials
    NOT_FOUND = 4  # no such task, upload or stack (or the API lacks the route)
    CONFLICT = 5  # the task's state refuses the action (409): cancel a running task, retry one
    #               that is not dead
    DENIED = 6  # the API refused the token (401) or its scope (403)


# The attributes every log record has: the others are the keys a call passed (extra=...).
_RECORD_ATTRIBUTES = {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message"}


class PeopleLogFormatter(logging.Formatter):
    """A log record as one line for people (the library logs JSON, for CloudWatch):
    `LEVEL message key=value ...`, with the keys the call passed."""

    def format(self, record: logging.LogRecord) -> str:
        keys = " ".join(
            f"{key}={' '.join(str(value).split())}"
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
        )
        return f"{record.levelname} {record.getMessage()}" + (f" {keys}" if keys else "")


def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str, code: ExitCode) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    stderr().print(message, style="red", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def say(message: str) -> None:
    """A line for the person at the terminal, on stderr: stdout stays the command's output."""
    stderr().print(message, markup=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """JSON on stdout, exactly (no markup, no wrapping), for scripts."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def unreachable_errors(hint: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a command: when the API or AWS cannot be reached at all, one line that says where
    and `hint` (what to do), and exit 3, instead of a traceback."""

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            import httpx
            from botocore.exceptions import NoCredentialsError

            from offload.aws.errors import unreachable

            try:
                return command(*args, **kwargs)
            except httpx.TransportError as error:
                url = error.request.url if _has_request(error) else None
                where = f"{url.scheme}://{url.netloc.decode()}" if url else "the API"
                fail(f"nothing answers at {where} ({error}): {hint}", ExitCode.UNREACHABLE)
            except NoCredentialsError:
                fail(f"no AWS credentials: {hint}", ExitCode.UNREACHABLE)
            except Exception as error:
                reason = unreachable(error)
                if reason is None:
                    raise
                fail(f"{reason}: {hint}", ExitCode.UNREACHABLE)

        return wrapper

    return decorate


def _has_request(error: Exception) -> bool:
    try:
        return error.request is not None  # type: ignore[attr-defined]
    except RuntimeError:  # httpx raises when the error was made without a request
        return False


def age(timestamp: str | None) -> str:
    """'12s', '5m', '3h', '2d' ago (a future time, as a schedule's run_at: 'in 5m')."""
    if not timestamp:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = (datetime.now(UTC) - then).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            text = f"{int(seconds // size)}{unit}"
            break
    else:
        text = f"{int(seconds)}s"
    return f"in {text}" if ahead else text


STATE_STYLES = {
    "succeeded": "green",
    "running": "cyan",
    "queued": "blue",
    "scheduled": "blue",
    "retrying": "yellow",
    "failed": "red",
    "dead": "bold red",
    "cancelled": "dim",
}


def state_text(state: str) -> str:
    """The state, coloured, as Rich markup."""
    style = STATE_STYLES.get(state)
    return f"[{style}]{escape(state)}[/]" if style else escape(state)


def cut(value: Any) -> Text:
    """A table cell on one line, cut with … where the column is narrower (plain text: no
    markup)."""
    text = "-" if value is None or value == "" else str(value).replace("\n", " ")
    return Text(text, no_wrap=True, overflow="ellipsis")
