"""The queues, each named once: the name tasks and handlers use (`@task(queue="email")`,
`sqs_handler("email")`), the variables that hold its URL and its DLQ's URL, and the stack
outputs that give them. Settings, the in-process fallback and the DLQ tool read them from here.
"""

from dataclasses import dataclass
from typing import Literal

QueueName = Literal["tasks", "email", "uploads"]


@dataclass(frozen=True)
class Queue:
    name: QueueName
    url_variable: str
    dlq_url_variable: str
    url_output: str
    dlq_url_output: str


QUEUES: tuple[Queue, ...] = (
    Queue(
        "tasks",
        url_variable="OFFLOAD_TASK_QUEUE_URL",
        dlq_url_variable="OFFLOAD_TASK_DLQ_URL",
        url_output="TaskQueueUrl",
        dlq_url_output="TaskDeadLetterQueueUrl",
    ),
    Queue(
        "email",
        url_variable="OFFLOAD_EMAIL_QUEUE_URL",
        dlq_url_variable="OFFLOAD_EMAIL_DLQ_URL",
        url_output="EmailQueueUrl",
        dlq_url_output="EmailDeadLetterQueueUrl",
    ),
    Queue(
        "uploads",
        url_variable="OFFLOAD_UPLOAD_QUEUE_URL",
        dlq_url_variable="OFFLOAD_UPLOAD_DLQ_URL",
        url_output="UploadQueueUrl",
        dlq_url_output="UploadDeadLetterQueueUrl",
    ),
)


def queue_named(name: str) -> Queue:
    """The queue called `name`; KeyError for a name that is not one of QUEUES."""
    for each in QUEUES:
        if each.name == name:
            return each
    raise KeyError(f"no queue named {name!r}; the queues are {', '.join(q.name for q in QUEUES)}")
