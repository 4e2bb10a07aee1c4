"""A registered 2-second task, loaded by the TaskWorker through OFFLOAD_TASK_MODULES."""

import time

from offload import task


@task
def slow_task(seconds: float) -> None:
    time.sleep(seconds)
