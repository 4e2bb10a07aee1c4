"""`offload tasks list|show|cancel|retry`: the tasks, through the API (GET /tasks, GET
/tasks/{id}, DELETE /tasks/{id}, POST /tasks/{id}/retry), as their owner sees them."""

import json
import time
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.markup import escape
from rich.table import Table

from offload.aws.tasks_table import MAX_LIST_LIMIT
from offload.cli.api import UNREACHABLE_HINT, Api, Session
from offload.cli.output import (
    ExitCode,
    age,
    cut,
    fail,
    print_json,
    say,
    state_text,
    stderr,
    stdout,
    unreachable_errors,
)
from offload.models import TaskState

app = typer.Typer(
    help="List, show, cancel and retry tasks (through the API).", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON, for scripts.")]
TaskId = Annotated[UUID, typer.Argument(help="The task's id.", show_default=False)]


def _api(ctx: typer.Context) -> Api:
    session: Session = ctx.obj
    return session.api()


@app.command("list")
@unreachable_errors(UNREACHABLE_HINT)
def list_tasks(
    ctx: typer.Context,
    *,
    state: Annotated[TaskState | None, typer.Option(help="Only tasks in this state.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only tasks of this kind.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_LIST_LIMIT, help="The most tasks per page.")
    ] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Go on from here: the previous page's next_cursor.")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every page, not just the first.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Your tasks, newest first."""
    api = _api(ctx)
    tasks: list[dict[str, Any]] = []
    while True:
        params = {"state": state, "kind": kind, "limit": limit, "cursor": cursor}
        page = api.call("GET", "/tasks", params={k: v for k, v in params.items() if v})
        tasks.extend(page.get("tasks", []))
        cursor = page.get("next_cursor")
        if not (every and cursor):
            break
    if as_json:
        print_json({"tasks": tasks, "next_cursor": cursor})
        return
    console = stdout()
    if not tasks:
        console.print("no tasks" + (" match" if state or kind else " yet"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    # Kind and error are cut to fit (wrappable columns shrink; the others keep their width)
    table.add_column("TASK ID", no_wrap=True, min_width=36)
    table.add_column("KIND", min_width=8)
    table.add_column("STATE", no_wrap=True)
    table.add_column("ATTEMPTS", justify="right", no_wrap=True)
    table.add_column("AGE", justify="right", no_wrap=True)
    table.add_column("ERROR", min_width=10)
    for task in tasks:
        table.add_row(
            cut(task.get("task_id")),
            cut(task.get("kind")),
            state_text(str(task.get("state", "-"))),
            cut(task.get("attempts")),
            age(task.get("created_at")),
            cut(task.get("error")),
        )
    console.print(table)
    if cursor:
        say(f"more: offload tasks list --cursor {cursor} (or --all)")


@app.command("show")
@unreachable_errors(UNREACHABLE_HINT)
def show(
    ctx: typer.Context,
    task_id: TaskId,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait until the task finishes; exit 1 unless it succeeded."),
    ] = False,
    timeout: Annotated[float, typer.Option(help="The longest --wait, in seconds.")] = 300,
    as_json: JsonOption = False,
) -> None:
    """One task: its state, attempts, result or error, and the history of its transitions."""
    api = _api(ctx)
    task = api.call("GET", f"/tasks/{task_id}")
    if wait:
        deadline = time.monotonic() + timeout
        with stderr().status(f"waiting for task {task_id}…") as status:
            while not _final(task.get("state")):
                if time.monotonic() > deadline:
                    fail(
                        f"task {task_id} is still {task.get('state')} after {timeout:.0f} s",
                        ExitCode.FAILED,
                    )
                status.update(f"task {task_id}: {task.get('state')}…")
                time.sleep(0.5)
                task = api.call("GET", f"/tasks/{task_id}")
    if as_json:
        print_json(task)
    else:
        print_task(task)
    if wait and task.get("state") != "succeeded":
        raise typer.Exit(ExitCode.FAILED)


@app.command("cancel")
@unreachable_errors(UNREACHABLE_HINT)
def cancel(ctx: typer.Context, task_id: TaskId, as_json: JsonOption = False) -> None:
    """Cancel a task that has not started (queued, scheduled or retrying); exit 5 if it has."""
    answer = _api(ctx).call("DELETE", f"/tasks/{task_id}")
    _done(answer, task_id, "cancelled", as_json)


@app.command("retry")
@unreachable_errors(UNREACHABLE_HINT)
def retry(ctx: typer.Context, task_id: TaskId, as_json: JsonOption = False) -> None:
    """Queue a dead task again, under the same id; exit 5 if it is not dead."""
    answer = _api(ctx).call("POST", f"/tasks/{task_id}/retry")
    _done(answer, task_id, "queued again", as_json)


def _done(answer: Any, task_id: UUID, what: str, as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    state = answer.get("state") if isinstance(answer, dict) else None
    stdout().print(f"task {task_id} {what}" + (f": {state_text(state)}" if state else ""))


# The fields `show` lays out itself, in this order; any other field follows as it comes.
SHOWN = ("task_id", "kind", "state", "attempts", "created_at", "updated_at", "run_at")
LAST = ("error", "result", "history")


def print_task(task: dict[str, Any]) -> None:
    console = stdout()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key in SHOWN:
        if task.get(key) is None:
            continue
        value = task[key]
        if key == "state":
            text = state_text(str(value))
        elif key.endswith("_at"):
            text = f"{escape(str(value))}  ({age(str(value))})"
        else:
            text = escape(str(value))
        grid.add_row(key.replace("_", " "), text)
    for key, value in task.items():
        if key not in SHOWN and key not in LAST and value not in (None, [], {}):
            grid.add_row(key.replace("_", " "), escape(_compact(value)))
    if task.get("error"):
        grid.add_row("error", f"[red]{escape(str(task['error']))}[/]")
    if task.get("result") is not None:
        grid.add_row("result", escape(json.dumps(task["result"], indent=2, default=str)))
    console.print(grid)
    history = task.get("history") or []
    if history:
        table = Table(title="history", title_justify="left", box=None, header_style="bold")
        for column in ("AT", "STATE", "ATTEMPT", "ERROR"):
            table.add_column(column, overflow="fold" if column == "ERROR" else "ellipsis")
        for entry in history:
            table.add_row(
                escape(str(entry.get("at", "-"))),
                state_text(str(entry.get("state", "-"))),
                str(entry.get("attempt", "-")),
                escape(_one_line(entry.get("error"))),
            )
        console.print(table)


def _final(state: Any) -> bool:
    try:
        return TaskState(state).is_final
    except ValueError:
        return False


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _one_line(text: Any) -> str:
    return str(text).replace("\n", " ") if text else ""
