"""Email endpoints: each one enqueues a send_email task."""

from fastapi import APIRouter, Request, status

from api.models import TaskAccepted
from api.security import BODY_ERRORS, NOT_QUEUED, UNAUTHORIZED
from example_app.emails import EmailContent, Recipient, send_email
from offload.fastapi import BackgroundTasks

router = APIRouter(tags=["email"], responses=UNAUTHORIZED | BODY_ERRORS | NOT_QUEUED)

DEFAULT_SUBJECT = "Hello from Offload"
DEFAULT_TEXT = "This email was sent by a durable background task."


@router.post("/email/{to_email}", status_code=status.HTTP_202_ACCEPTED)
async def email_with_defaults(
    to_email: Recipient, background_tasks: BackgroundTasks, request: Request
) -> TaskAccepted:
    task_id = background_tasks.add_task(
        send_email, to=to_email, subject=DEFAULT_SUBJECT, text=DEFAULT_TEXT
    )
    return TaskAccepted.of(request, task_id)


@router.post("/emails", status_code=status.HTTP_202_ACCEPTED)
async def create_email(
    email: EmailContent, background_tasks: BackgroundTasks, request: Request
) -> TaskAccepted:
    task_id = background_tasks.add_task(send_email, **email.model_dump(exclude_none=True))
    return TaskAccepted.of(request, task_id)
