"""`offload run --built` (`make run ARGS=--built`): the local system on the built packages. The
API is the built ApiFunction behind an HTTP API stand-in; the pollers invoke the built workers."""

import sys
import time
from pathlib import Path

import pytest
import requests

from offload.local.emulator import Runtime
from tests.e2e.local_system import running
from tests.support import ROOT, SENDER

pytestmark = [pytest.mark.built, pytest.mark.e2e]


def test_an_email_through_the_built_api_and_email_worker(built: Runtime, tmp_path: Path) -> None:
    # Given the local system started on the built packages
    offload = [sys.executable, "-m", "offload.local"]
    with running(
        offload, "--built", "--sender", SENDER, cwd=ROOT, log=tmp_path / "run.log"
    ) as system:
        # Then it says so
        assert f"mode: built — the packages in {built.build}" in system.output()

        # When an email is posted to the API
        email = {"to": "dave@example.com", "subject": "Built", "text": "Through the packages."}
        queued = requests.post(f"{system.api_url}/emails", json=email, timeout=30)
        assert queued.status_code == 202, queued.text
        status_url = queued.json()["status_url"]

        # Then the built EmailWorker sends it, and the API's own URL reports it
        assert status_url.startswith(f"{system.api_url}/tasks/")
        deadline = time.monotonic() + 60
        state = "queued"
        while state not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            state = requests.get(status_url, timeout=30).json()["state"]
        assert state == "succeeded", system.output()
        sent = requests.get(f"{system.moto_url}/moto-api/data.json", timeout=5).json()
        assert [m["destinations"]["ToAddresses"] for m in sent["ses"]["Message"]] == [
            ["dave@example.com"]
        ]
