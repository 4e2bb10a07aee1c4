"""Email endpoints: each one enqueues a send_email task."""

from fastapi import APIRouter, Request, status

from api.models import SendAt, TaskAccepted
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


class EmailRequest(EmailContent):
    """An email, and when to send it (optional: now)."""

    send_at: SendAt | None = None


@router.post("/emails", status_code=status.HTTP_202_ACCEPTED)
async def create_email(
    email: EmailRequest, background_tasks: BackgroundTasks, request: Request
) -> TaskAccepted:
    content = email.model_dump(exclude_none=True, exclude={"send_at"})
    if email.send_at is None:
        return TaskAccepted.of(request, background_tasks.add_task(send_email, **content))
    task_id = background_tasks.add_task_later(email.send_at, send_email, **content)
    return TaskAccepted.of(request, task_id, email.send_at)
