"""`make run` fires the template's schedules: the dev heartbeat (rate(1 minute)), whose first
firing is when the local system starts, runs its write_log task."""

import re
import time

import requests

from tests.e2e.local_system import LocalSystem

FIRED = re.compile(
    r"schedule \S+/HeartbeatSchedule fired \(\S+\) → \S+  task ([0-9a-f-]{36}) write_log"
)


def test_the_heartbeat_schedule_fires_and_its_task_runs(local_system: LocalSystem) -> None:
    deadline = time.monotonic() + 65
    task: dict[str, object] = {}
    while time.monotonic() < deadline:
        fired = FIRED.search(local_system.output())
        if fired:
            response = requests.get(f"{local_system.api_url}/tasks/{fired.group(1)}", timeout=5)
            task = response.json() if response.status_code == 200 else {}
            if task.get("state") == "succeeded":
                break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no heartbeat ran within 65 s: {task}\n{local_system.output()}")
    assert task["kind"] == "write_log"
    assert "schedules (fired by the runner" in local_system.output()
