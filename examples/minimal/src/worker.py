"""The TaskWorker's Lambda handler: each record of the TaskQueue runs through Offload's task
lifecycle (claim, run once, retry with backoff or dead-letter, record the state)."""

from offload.worker import sqs_handler

handler = sqs_handler("tasks")
