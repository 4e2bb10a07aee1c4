"""Domain errors. The worker decides retry or dead-letter from these types alone."""


class TaskError(Exception):
    """Base class for errors raised while enqueueing or running a task."""


class PermanentTaskError(TaskError):
    """Retrying cannot help; the message goes to the DLQ at once and the task is dead."""


class UnknownTaskError(PermanentTaskError):
    """A message names no task: not a registered one, nor a function its allow-list permits."""


class InvalidMessageError(PermanentTaskError):
    """A message body that is not a valid task message."""


class EmailRejectedError(PermanentTaskError):
    """SES refused the email for a reason that will not change on retry."""


class RecipientNotAllowedError(PermanentTaskError):
    """The recipient is not on this stage's allow-list (OFFLOAD_ALLOWED_RECIPIENTS)."""


class TransientTaskError(TaskError):
    """Worth retrying later: throttling, a 5xx, a timeout, or a lost connection."""


class EnqueueError(TaskError):
    """The task could not be handed to SQS; nothing was enqueued for it."""


class NotEnoughTimeError(TransientTaskError):
    """Too little of the invocation is left to start a call that must not be cut off."""
