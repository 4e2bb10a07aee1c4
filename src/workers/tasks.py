"""TaskWorker: TaskQueue → registered Python tasks (write_log and your own)."""

from workers.sqs_tasks import task_queue_handler

handler = task_queue_handler("tasks")
