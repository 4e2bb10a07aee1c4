"""EmailWorker: EmailQueue → SES."""

from workers.sqs_tasks import task_queue_handler

handler = task_queue_handler("email")
