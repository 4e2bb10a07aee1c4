"""Email through SES (v2 API)."""

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from offload import deadline
from offload.aws.errors import error_code, transient_errors
from offload.errors import EmailRejectedError

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import BodyTypeDef

# Errors that will not go away on retry; anything else is retried by the queue.
PERMANENT_CODES = {
    "MessageRejected",
    "MailFromDomainNotVerifiedException",
    "NotFoundException",
    "BadRequestException",
    "AccountSuspendedException",
}


def send_email(
    client: "SESV2Client",
    *,
    sender: str,
    to: str,
    subject: str,
    text: str | None,
    html: str | None,
    needs_seconds: float,
) -> str:
    """Send one email and return SES's message id.

    One request: a 5xx, a throttle or a timeout raises TransientTaskError and the queue retries
    the task. A read timeout is ambiguous (SES may have accepted the email), so its retry can
    send a second one. The call starts only if the invocation has time for its worst case and
    the write that records it, `needs_seconds` (Settings.ses_send_seconds; NotEnoughTimeError,
    transient, otherwise).
    """
    deadline.require(needs_seconds, "SES SendEmail")
    body: BodyTypeDef = {}
    if text is not None:
        body["Text"] = {"Data": text, "Charset": "UTF-8"}
    if html is not None:
        body["Html"] = {"Data": html, "Charset": "UTF-8"}
    try:
        with transient_errors("SES SendEmail"):
            response = client.send_email(
                FromEmailAddress=sender,
                Destination={"ToAddresses": [to]},
                Content={
                    "Simple": {"Subject": {"Data": subject, "Charset": "UTF-8"}, "Body": body}
                },
            )
    except ClientError as exc:
        code = error_code(exc)
        if code in PERMANENT_CODES:
            message = exc.response.get("Error", {}).get("Message", "")
            hint = ""
            if "not verified" in message.lower() or code == "MessageRejected":
                hint = (
                    f" Verify the sender identity {sender!r} in SES (or set the SenderEmail "
                    "parameter to a verified address); in the SES sandbox the recipient must be "
                    "verified too."
                )
            raise EmailRejectedError(f"SES rejected the email ({code}): {message}.{hint}") from exc
        raise
    return response["MessageId"]
