"""Email endpoints: each one enqueues a send_email task."""

from fastapi import APIRouter, Request, status
from pydantic import EmailStr

from api.models import TaskAccepted
from offload.emails import EmailContent, send_email
from offload.fastapi import BackgroundTasks

router = APIRouter(tags=["email"])

DEFAULT_SUBJECT = "Hello from Offload"
DEFAULT_TEXT = "This email was sent by a durable background task."


def _accepted(request: Request, task_id: object) -> TaskAccepted:
    url = str(request.url_for("get_task", task_id=task_id))
    return TaskAccepted(task_id=task_id, status_url=url)  # type: ignore[arg-type]


@router.post("/email/{to_email}", status_code=status.HTTP_202_ACCEPTED)
async def email_with_defaults(
    to_email: EmailStr, background_tasks: BackgroundTasks, request: Request
) -> TaskAccepted:
    task_id = background_tasks.add_task(
        send_email, to=to_email, subject=DEFAULT_SUBJECT, text=DEFAULT_TEXT
    )
    return _accepted(request, task_id)


@router.post("/emails", status_code=status.HTTP_202_ACCEPTED)
async def create_email(
    email: EmailContent, background_tasks: BackgroundTasks, request: Request
) -> TaskAccepted:
    task_id = background_tasks.add_task(send_email, **email.model_dump(exclude_none=True))
    return _accepted(request, task_id)
