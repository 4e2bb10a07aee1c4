"""Offload: durable background tasks for FastAPI on AWS serverless.

from offload import task

@task
def write_log(message: str) -> None: ...
"""

from offload.registry import task

__all__ = ["task"]
