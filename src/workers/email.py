"""EmailWorker: EmailQueue → SES."""

from offload.worker import sqs_handler

handler = sqs_handler("email")
