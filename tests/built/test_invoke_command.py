"""`offload invoke FUNCTION -e EVENT` (`make invoke`): what `sam local invoke` prints, and its
exit code, from the built package under the emulator with an embedded AWS of its own."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from offload.local.emulator import Runtime
from tests.e2e.local_system import clean_environment
from tests.support import EVENTS, ROOT, free_port

pytestmark = pytest.mark.built


@pytest.mark.parametrize(
    ("event", "code", "answer"),
    [
        (json.dumps(json.loads((EVENTS / "api-health.json").read_text())), 0, "statusCode"),
        ("{}", 1, "errorType"),  # no handler for this event: Mangum raises
    ],
    ids=["answers", "raises"],
)
def test_invoke_prints_what_sam_local_invoke_prints(
    built: Runtime, tmp_path: Path, event: str, code: int, answer: str
) -> None:
    # Given an event file, and no local system on the moto port
    path = tmp_path / "event.json"
    path.write_text(event)

    # When the built ApiFunction is invoked with it
    command = [sys.executable, "-m", "offload.local", "invoke", "ApiFunction", "-e", str(path)]
    command += ["--moto-port", str(free_port())]
    env = clean_environment()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )

    # Then the runtime's lines and the logs are on stderr, the response alone on stdout, and the
    # exit code says whether the function raised
    request = re.search(r"^START RequestId: (\S+) Version: \$LATEST$", done.stderr, re.M)
    assert request, done.stderr
    assert f"END RequestId: {request[1]}" in done.stderr
    assert re.search(
        rf"^REPORT RequestId: {request[1]}\tInit Duration: .*Memory Size: 512 MB", done.stderr, re.M
    )
    assert answer in json.loads(done.stdout)
    assert done.returncode == code, done.stderr
