"""Offload: durable background tasks for FastAPI on AWS serverless.

    from offload.fastapi import BackgroundTasks   # instead of fastapi's: add_task is durable

A plain top-level function is a task as it is (named "module:function"; the workers import it
only from the modules in OFFLOAD_TASK_MODULES). @task registers one explicitly, with options:

    from offload import task

    @task(queue="email")            # or @task, @task(name="send_email")
    def send_email(to: str, subject: str) -> None: ...
"""

from offload.registry import task

__all__ = ["task"]
