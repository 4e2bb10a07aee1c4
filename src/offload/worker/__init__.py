"""The worker runtime: one task lifecycle for the records of every queue.

    from offload.worker import sqs_handler, s3_objects

    handler = sqs_handler("tasks")                                    # task messages
    handler = sqs_handler("uploads", source=s3_objects(task=process_upload))  # S3 notifications

- handler: sqs_handler, the Lambda handler of one queue's worker (partial batch failures);
- runtime: the lifecycle of each record and each task call in it;
- sources: how a queue's messages become task calls (task messages, S3 notifications).
"""

from offload.worker.handler import sqs_handler
from offload.worker.runtime import MAX_RESULT_BYTES
from offload.worker.sources import s3_objects

__all__ = ["MAX_RESULT_BYTES", "s3_objects", "sqs_handler"]
