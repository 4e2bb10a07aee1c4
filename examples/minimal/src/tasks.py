"""The app's tasks: plain functions that a worker Lambda runs, registered with @task.

The workers import this module because the template names it: OFFLOAD_TASK_MODULES=tasks.
"""

from offload import task


@task
def write_log(message: str) -> dict[str, str]:
    """FastAPI's tutorial task. What it returns is kept as the task's result (GET /tasks/{id})."""
    return {"logged": message}
