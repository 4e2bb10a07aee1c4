"""The `offload` command (Typer, with Rich tables and progress, httpx for the API and S3).

    offload run [--built] [--template template.yaml]   the whole system on 127.0.0.1
    offload tasks list [--state dead] [--kind K] [--all] [--json]
    offload tasks show ID [--wait] [--json]
    offload tasks cancel ID | offload tasks retry ID
    offload emails [--json]                             what the local system's SES has sent
    offload upload FILE [--json]                        a CSV/TSV, with a progress bar
    offload dlq list|redrive|purge [--queue Q] [--stack NAME]
    offload invoke FUNCTION -e EVENT                    a built function, no container

`offload --api URL --token TOKEN ...` (or OFFLOAD_API_URL, OFFLOAD_API_TOKEN) for another API.
Exit codes (offload.cli.output.ExitCode): 0 ok, 1 the task or operation failed, 2 usage,
3 nothing answers (API or AWS), 4 not found, 5 conflict (the task's state refuses it), 6 denied.

It needs `pip install "offload[cli]"` (`run` and `invoke`: "offload[local]"); the functions'
packages never ship it.
"""

import sys
from collections.abc import Sequence

# The top-level packages of the `cli` and `local` extras.
CLI_PACKAGES = frozenset({"typer", "click", "rich", "httpx"})
LOCAL_PACKAGES = frozenset({"moto", "samtranslator", "uvicorn", "requests", "werkzeug"})


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command on argv (default: sys.argv[1:]); exits with its code."""
    try:
        from offload.cli.app import app

        app(args=list(sys.argv[1:] if argv is None else argv), prog_name="offload")
    except ModuleNotFoundError as error:
        package = (error.name or "").split(".")[0]
        extra = "cli" if package in CLI_PACKAGES else "local" if package in LOCAL_PACKAGES else ""
        if not extra:
            raise
        print(
            f"offload: {error}: this command needs pip install 'offload[{extra}]'",
            file=sys.stderr,
        )
        sys.exit(2)
