"""FastAPI's BackgroundTasks example, made durable by changing one import."""

from fastapi import APIRouter, Request, status

from api.models import TaskAccepted
from api.security import BODY_ERRORS, NOT_QUEUED, UNAUTHORIZED
from example_app.emails import Address
from example_app.notifications import write_log
from offload.fastapi import BackgroundTasks

router = APIRouter(tags=["notifications"], responses=UNAUTHORIZED | BODY_ERRORS | NOT_QUEUED)


@router.post("/send-notification/{email}", status_code=status.HTTP_202_ACCEPTED)
async def send_notification(
    email: Address, background_tasks: BackgroundTasks, request: Request
) -> TaskAccepted:
    task_id = background_tasks.add_task(write_log, f"Notification sent to {email}")
    return TaskAccepted.of(request, task_id)
