"""`python -m offload.local ARGS` is `offload ARGS`; and the local system's own processes:
`poll SPEC` (one worker's poller) and `gateway SPEC HOST PORT` (the HTTP API of `run --built`),
which the runner starts."""

import json
import sys


def internal(argv: list[str]) -> bool:
    """Run the runner's child process that argv names; False if argv names none."""
    if argv[:1] == ["poll"] and len(argv) == 2:
        from offload.local.poller import main as poll

        poll(argv[1])
        return True
    if argv[:1] == ["gateway"] and len(argv) == 4:
        from offload.local.emulator import Runtime
        from offload.local.gateway import serve

        _, spec, host, port = argv
        emulator = Runtime.from_spec(json.loads(spec), lambda line: print(line, flush=True))
        serve(emulator, host, int(port))
        return True
    return False


if __name__ == "__main__":
    if not internal(sys.argv[1:]):
        from offload.cli import main

        main()
