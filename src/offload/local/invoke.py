"""`offload invoke FUNCTION -e EVENT`: what `sam local invoke` does, with no container.

The function's built package (`sam build`, rebuilt when a source changed) runs under the Lambda
Runtime Interface Emulator with python3.13 (offload.local.emulator), configured as the template
configures it, against the embedded AWS: the running local system's (`offload run`) when one
answers on the moto port, else one started for this invoke. As `sam local invoke` does, the
runtime's START/END/REPORT lines and the function's logs go to stderr, the response to stdout.
"""

import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from offload.local.build import EmulatorError
from offload.local.emulator import Runtime, built_function
from offload.local.runner import LOCAL_CREDENTIALS, provision_local, start_moto
from offload.local.stack import code_dirs, provisioned_functions

if TYPE_CHECKING:
    from mypy_boto3_lambda.type_defs import FunctionConfigurationResponseTypeDef

Configurations = dict[str, "FunctionConfigurationResponseTypeDef"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _answers(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@contextmanager
def local_stack(
    template: Path, moto_port: int, sender: str
) -> Iterator[tuple[str, Configurations]]:
    """The embedded AWS and the functions' configurations in it: the running local system's,
    or a fresh one on a free port, stopped afterwards."""
    os.environ.update(LOCAL_CREDENTIALS)
    running = f"http://127.0.0.1:{moto_port}"
    if _answers("127.0.0.1", moto_port):
        functions = provisioned_functions(running)
        if functions is not None:
            _say(f"using the local system's embedded AWS at {running}")
            yield running, functions
            return
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    moto = start_moto("127.0.0.1", 0)
    url = f"http://127.0.0.1:{moto.server.server_port}"
    _say(f"no local system on {running}: started the embedded AWS at {url} for this invoke")
    try:
        stack = provision_local(url, template, sender)
        yield url, stack.functions
    finally:
        moto.stop()


def invoke(
    template: Path,
    function: str,
    event: bytes,
    *,
    moto_port: int = 4566,
    sender: str = "noreply@example.com",
    verbose: bool = False,
) -> int:
    """Invoke one built function with one event; print as `sam local invoke` does. Returns the
    exit code: 1 when the function errors."""
    functions = sorted(code_dirs(template))
    if function not in functions:
        _say(f"{template.name} has no function {function!r}; its functions: {', '.join(functions)}")
        return 2
    try:
        runtime = Runtime.prepare(template, _say)
    except EmulatorError as error:
        _say(str(error))
        return 2
    with local_stack(template, moto_port, sender) as (moto_url, configurations):
        local = {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": moto_url}
        spec = built_function(function, configurations[function], runtime.build, local)
        emulator = runtime.emulator(spec, _say, verbose)
        try:
            result = emulator.invoke(event)
        finally:
            emulator.stop()
    print(result.payload.decode(errors="replace"), flush=True)
    return 1 if result.error else 0
