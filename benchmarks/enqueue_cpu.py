"""CPU per enqueue request: POST /emails through Mangum (api.main.handler) against the bare
Mangum route that makes one `send_message` (benchmarks.baselines.bare_handler).

    python -m benchmarks.enqueue_cpu [ROUNDS] [--profile OUT.prof]

moto runs as a server in another process, so that its CPU is not counted; this process's CPU
(time.process_time: every thread of it, so thread-pool hops count) is measured around each
request, the two handlers alternating (ABAB), after a warm-up. Prints the medians and their
ratio (issue 11's target: at most 1.5x). With --profile, cProfile records one handler's
requests (--profiled offload, the default, or bare), timed by CPU, for `python -m pstats`.

cpu_samples() is the part another benchmark can reuse: run it in a process whose AWS_* point
at moto's server (benchmarks._common.moto_server, child_env).
"""

import argparse
import cProfile
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from benchmarks._enqueue import DRAIN_EVERY, Context, _drain, _provision, emails_event

WARMUP = 20
ROUNDS = 300

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def cpu_samples(
    rounds: int = ROUNDS, profile: cProfile.Profile | None = None, profiled: str = "offload"
) -> dict[str, list[float]]:
    """Microseconds of this process's CPU per request, for "offload" and "bare"; `profile`
    records the `profiled` handler's requests."""
    queues = _provision()
    from api.main import handler as offload_handler
    from benchmarks.baselines.bare_handler import handler as bare_handler

    event, context, sqs = emails_event(), Context(), boto3.client("sqs")
    handlers: dict[str, Handler] = {"offload": offload_handler, "bare": bare_handler}
    samples: dict[str, list[float]] = {name: [] for name in handlers}
    for index in range(WARMUP + rounds):
        if index % DRAIN_EVERY == 0:
            for url in queues.values():
                _drain(sqs, url)
        order = list(handlers) if index % 2 == 0 else list(reversed(handlers))
        for name in order:
            profiling = profile is not None and name == profiled and index >= WARMUP
            if profiling:
                profile.enable()  # type: ignore[union-attr]
            start = time.process_time()
            response = handlers[name](event, context)
            used = time.process_time() - start
            if profiling:
                profile.disable()  # type: ignore[union-attr]
            if response["statusCode"] != 202:
                raise RuntimeError(f"{name}: {response['statusCode']} {response['body']}")
            if index >= WARMUP:
                samples[name].append(used * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", type=int, nargs="?", default=ROUNDS)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the requests here")
    parser.add_argument(
        "--profiled", choices=("offload", "bare"), default="offload", help="whose requests"
    )
    parser.add_argument("--json", type=Path, help="write every sample here")
    args = parser.parse_args()
    if "AWS_ENDPOINT_URL" not in os.environ:
        # Start moto's server in another process and run this script again against it.
        from benchmarks._common import ROOT, child_env, moto_server

        with moto_server() as url:
            command = [sys.executable, "-m", "benchmarks.enqueue_cpu", *sys.argv[1:]]
            env = child_env(AWS_ENDPOINT_URL=url)
            sys.exit(subprocess.run(command, cwd=ROOT, env=env, check=False).returncode)
    # Timed by CPU, not the wall clock: waiting on moto costs nothing here.
    profile = cProfile.Profile(time.process_time) if args.profile else None
    # The API's JSON log lines go to stdout, as on Lambda; here to /dev/null, not a terminal.
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            samples = cpu_samples(args.rounds, profile, args.profiled)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    if profile is not None and args.profile:
        profile.dump_stats(args.profile)
    if args.json:
        args.json.write_text(json.dumps(samples))
    offload, bare = (statistics.median(samples[name]) for name in ("offload", "bare"))
    print(
        f"CPU per request, median of {args.rounds}: POST /emails {offload:.0f} us, "
        f"bare send_message {bare:.0f} us, ratio {offload / bare:.2f} (target <= 1.5)"
    )


if __name__ == "__main__":
    main()
