"""`make run` fires the template's schedules: the dev heartbeat (rate(1 minute)), whose first
firing is when the local system starts, runs its write_log task."""

import re
import time

from tests.e2e.local_system import LocalSystem

FIRED = re.compile(
    r"schedule \S+/HeartbeatSchedule fired \(\S+\) → \S+  task ([0-9a-f]{8}) write_log"
)


def test_the_heartbeat_schedule_fires_and_its_task_runs(local_system: LocalSystem) -> None:
    deadline = time.monotonic() + 65
    while time.monotonic() < deadline:
        output = local_system.output()
        fired = FIRED.search(output)
        if fired and re.search(rf"task {fired.group(1)}  write_log .*→ succeeded", output):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no heartbeat ran within 65 s:\n{local_system.output()}")
    assert "schedules (fired by the runner" in local_system.output()
