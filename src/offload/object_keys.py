"""The key convention of objects that start tasks: `uploads/<task id>/<name>`.

The API hands out a key built by object_key() (a presigned POST for exactly that key); S3
notifies the queue of the created object; the worker's S3 source (offload.worker.sources)
reads the task id back with parse_object_key(). Any other key starts no task.
"""

from uuid import UUID

UPLOADS_PREFIX = "uploads/"


def object_key(task_id: UUID, name: str, prefix: str = UPLOADS_PREFIX) -> str:
    """The key of the object for task `task_id`: `uploads/<task id>/<name>`."""
    return f"{prefix}{task_id}/{name}"


def parse_object_key(key: str, prefix: str = UPLOADS_PREFIX) -> tuple[UUID, str] | None:
    """(task id, name) from `uploads/<task id>/<name>`; None for any other key (a name with a
    slash in it too)."""
    if not key.startswith(prefix):
        return None
    task_id, _, name = key.removeprefix(prefix).partition("/")
    if not name or "/" in name:
        return None
    try:
        return UUID(task_id), name
    except ValueError:
        return None
