"""Baseline for (c): the seed example, FastAPI's in-process BackgroundTasks under uvicorn."""

import time

from fastapi import BackgroundTasks, FastAPI

app = FastAPI()


def slow_task(seconds: float) -> None:
    time.sleep(seconds)


@app.post("/work", status_code=202)
async def work(background_tasks: BackgroundTasks, seconds: float = 2.0) -> dict[str, str]:
    background_tasks.add_task(slow_task, seconds)
    return {"status": "accepted"}


@app.get("/ping")
def ping() -> dict[str, bool]:
    return {"ok": True}
