"""Subject for (c): the Offload API app plus the seed's two routes, with only the import changed.

The 2-second task goes to SQS and runs in the TaskWorker, not in the web process.
"""

from api.main import app
from benchmarks.subjects.slow_task import slow_task
from offload.fastapi import BackgroundTasks

__all__ = ["app"]


@app.post("/work", status_code=202)
async def work(background_tasks: BackgroundTasks, seconds: float = 2.0) -> dict[str, str]:
    task_id = background_tasks.add_task(slow_task, seconds)
    return {"task_id": str(task_id)}


@app.get("/ping")
def ping() -> dict[str, bool]:
    return {"ok": True}
