"""The `offload` command: the local system and the dead-letter queues.

    offload run [--template template.yaml]   the whole system on 127.0.0.1, no AWS account
                [--built]                    ... on the built packages, under the Lambda emulator
    offload emails                           what the local system's SES has sent
    offload upload FILE                      upload a CSV/TSV file and print its summary
    offload invoke FUNCTION -e EVENT         a built function, as `sam local invoke`, no Docker
    offload dlq list|redrive|purge ...       the dead-letter queues (see `offload dlq --help`)

`python -m offload.local` is the same command, `python -m offload.dlq` the same as `offload dlq`.
Every command but `dlq` needs the local system's packages: pip install "offload[local]".
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# The top-level packages that the `local` extra installs.
LOCAL_PACKAGES = frozenset({"moto", "samtranslator", "uvicorn", "requests", "werkzeug"})


def _emails(moto_url: str) -> int:
    import requests

    try:
        data = requests.get(f"{moto_url}/moto-api/data.json", timeout=5).json()
    except requests.ConnectionError:
        print(f"nothing answers on {moto_url}; start the local system with `offload run`")
        return 1
    messages = data.get("ses", {}).get("Message", [])
    if not messages:
        print("no emails sent yet")
    for message in messages:
        to = ", ".join(message.get("destinations", {}).get("ToAddresses", []))
        print(f"From: {message['source']}\nTo: {to}\nSubject: {message['subject']}\n")
        print(f"{message['body']}\n{'-' * 60}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dlq"]:
        # Its own parser, options and help: `offload dlq --help`.
        from offload.dlq import main as dlq_main

        return dlq_main(argv[1:])
    try:
        return _local(argv)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in LOCAL_PACKAGES:
            raise SystemExit(
                f"{error}: the local system needs its packages: pip install 'offload[local]'"
            ) from None
        raise


def _invoke_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    invoke = commands.add_parser(
        "invoke",
        help="run a function's built package (sam build) with one event, as `sam local "
        "invoke` does but without a container",
    )
    invoke.add_argument("function", help="the function's logical id in the template")
    invoke.add_argument(
        "-e", "--event", type=Path, help="JSON event file (default: read from stdin)"
    )
    invoke.add_argument("--template", type=Path, default=Path("template.yaml"))
    invoke.add_argument(
        "--moto-port",
        type=int,
        default=int(os.getenv("OFFLOAD_MOTO_PORT", "4566")),
        help="the running local system's embedded AWS, used when it answers there; else one "
        "is started for the invoke (default: %(default)s)",
    )
    invoke.add_argument(
        "--sender", default=os.getenv("OFFLOAD_SENDER_EMAIL", "noreply@example.com")
    )
    invoke.add_argument("-v", "--verbose", action="store_true", help="show the emulator's lines")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offload", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # `poll` is internal (the runner starts one per worker instance): left out of the help.
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{run,emails,upload,invoke,dlq}"
    )
    run = commands.add_parser("run", help="start moto, the API and the workers")
    run.add_argument(
        "--host",
        default=os.getenv("OFFLOAD_LOCAL_HOST", "127.0.0.1"),
        help="address to serve on (default: %(default)s, env OFFLOAD_LOCAL_HOST)",
    )
    run.add_argument(
        "--api-port",
        type=int,
        default=int(os.getenv("OFFLOAD_API_PORT", "8000")),
        help="port of the API (default: %(default)s, env OFFLOAD_API_PORT)",
    )
    run.add_argument(
        "--moto-port",
        type=int,
        default=int(os.getenv("OFFLOAD_MOTO_PORT", "4566")),
        help="port of the embedded AWS (default: %(default)s, env OFFLOAD_MOTO_PORT)",
    )
    run.add_argument(
        "--sender",
        default=os.getenv("OFFLOAD_SENDER_EMAIL", "noreply@example.com"),
        help="From address, verified in the embedded SES (default: %(default)s)",
    )
    run.add_argument(
        "--instances",
        type=int,
        default=2,
        help="most poller processes per worker (default: %(default)s)",
    )
    run.add_argument(
        "--template",
        type=Path,
        default=Path("template.yaml"),
        help="your SAM template; its functions' code is imported from their CodeUri "
        "(default: %(default)s in the current directory)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show every worker log line")
    run.add_argument(
        "--built",
        action="store_true",
        help="run the built packages (sam build, rebuilt when a source changed) under the "
        "Lambda runtime emulator with python3.13, as `offload invoke` does, instead of "
        "importing the source",
    )
    run.add_argument(
        "--api-token",
        default=os.getenv("OFFLOAD_API_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on every route but /health",
    )
    emails = commands.add_parser("emails", help="list the emails the embedded SES has sent")
    emails.add_argument(
        "--moto-url", default=f"http://127.0.0.1:{os.getenv('OFFLOAD_MOTO_PORT', '4566')}"
    )
    upload = commands.add_parser("upload", help="upload a CSV/TSV file and wait for the result")
    upload.add_argument("file")
    upload.add_argument(
        "--api", default=f"http://127.0.0.1:{os.getenv('OFFLOAD_API_PORT', '8000')}"
    )
    _invoke_parser(commands)
    poll = commands.add_parser("poll")
    poll.add_argument("spec")
    gateway = commands.add_parser("gateway")  # the HTTP API of `run --built`
    gateway.add_argument("spec")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8000)
    commands.add_parser(
        "dlq", help="list, redrive or purge the dead-letter queues (offload dlq --help)"
    )
    return parser


def _local(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.api_token is not None and not args.api_token.strip():
        # Empty would otherwise mean "no token": an open API where one was asked for.
        parser.error(
            "--api-token (or OFFLOAD_API_TOKEN) is empty: give a token, or unset "
            "OFFLOAD_API_TOKEN to run the API without one"
        )

    if args.command == "emails":
        return _emails(args.moto_url)
    if args.command == "upload":
        from offload.local.upload import main as upload_main

        return upload_main(args.file, args.api)
    if args.command == "invoke":
        from offload.local.invoke import invoke as invoke_function

        template = args.template.resolve()
        if not template.is_file():
            parser.error(f"no SAM template at {template}: pass --template path/to/it")
        event = args.event.read_bytes() if args.event else sys.stdin.buffer.read()
        return invoke_function(
            template,
            args.function,
            event,
            moto_port=args.moto_port,
            sender=args.sender,
            verbose=args.verbose,
        )
    if args.command == "gateway":
        import json

        from offload.local.emulator import Runtime
        from offload.local.gateway import serve

        emulator = Runtime.from_spec(json.loads(args.spec), lambda line: print(line, flush=True))
        serve(emulator, args.host, args.port)
        return 0
    if args.command == "poll":
        from offload.local.poller import main as poll_main

        poll_main(args.spec)
        return 0
    from offload.local.runner import Options
    from offload.local.runner import run as run_system

    options = Options(
        host=args.host,
        api_port=args.api_port,
        moto_port=args.moto_port,
        sender=args.sender,
        instances=args.instances,
        verbose=args.verbose,
        environment={"OFFLOAD_API_TOKEN": args.api_token} if args.api_token else None,
        template=args.template.resolve(),
        built=args.built,
    )
    if not options.template.is_file():
        parser.error(f"no SAM template at {options.template}: pass --template path/to/it")
    run_system(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
