"""TaskWorker: TaskQueue → registered Python tasks (write_log and your own)."""

from offload.worker import sqs_handler

handler = sqs_handler("tasks")
