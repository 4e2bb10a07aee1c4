"""Domain errors. The worker decides the outcome of a task from these types alone:

- TransientTaskError (and any error not listed here): retry after a backoff; `retrying`, then
  `dead` when the queue's receives run out;
- PermanentTaskError: the message goes to the DLQ at once; `dead` (an operator looks);
- UnprocessableInputError: the input can never succeed; `failed` with the reason, for the user
  (no retry, no DLQ, no alarm).
"""


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


class UnprocessableInputError(TaskError):
    """The task's input can never succeed (an empty or unreadable file, say): the task is
    `failed` with this message as its error, for the user to read. No retry, no DLQ, no alarm:
    nothing is wrong with the system."""


class TransientTaskError(TaskError):
    """Worth retrying later: throttling, a 5xx, a timeout, or a lost connection."""


class EnqueueError(TaskError):
    """The task could not be handed to SQS; nothing was enqueued for it."""


class NotEnoughTimeError(TransientTaskError):
    """Too little of the invocation is left to start a call that must not be cut off."""
