"""FastAPI's BackgroundTasks example, made durable by changing one import."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from api.models import SendAt, TaskAccepted
from api.security import BODY_ERRORS, NOT_QUEUED, UNAUTHORIZED
from example_app.emails import Address
from example_app.notifications import write_log
from offload.fastapi import BackgroundTasks

router = APIRouter(tags=["notifications"], responses=UNAUTHORIZED | BODY_ERRORS | NOT_QUEUED)


@router.post("/send-notification/{email}", status_code=status.HTTP_202_ACCEPTED)
async def send_notification(
    email: Address,
    background_tasks: BackgroundTasks,
    request: Request,
    send_at: Annotated[
        SendAt | None, Query(description="When to send it (RFC 3339); now if absent.")
    ] = None,
) -> TaskAccepted:
    message = f"Notification sent to {email}"
    if send_at is None:
        return TaskAccepted.of(request, background_tasks.add_task(write_log, message))
    task_id = background_tasks.add_task_later(send_at, write_log, message)
    return TaskAccepted.of(request, task_id, send_at)
