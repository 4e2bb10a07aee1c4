"""A FastAPI app whose background tasks are durable: queued on SQS, run by a worker Lambda.

Locally: `offload run` (from the directory of template.yaml). On AWS: the ApiFunction's
Handler, `app.handler`.
"""

from fastapi import FastAPI, status
from mangum import Mangum

from offload.fastapi import BackgroundTasks
from offload.status import router as task_status
from tasks import write_log

app = FastAPI(title="My app")
app.include_router(task_status)  # GET /tasks/{task_id}: queued → running → succeeded


@app.post("/send-notification/{email}", status_code=status.HTTP_202_ACCEPTED)
async def send_notification(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    task_id = background_tasks.add_task(write_log, f"Notification sent to {email}")
    return {"task_id": str(task_id)}


handler = Mangum(app, lifespan="off")
