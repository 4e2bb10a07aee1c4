"""The send_email task and the validated email it sends."""

import re
import unicodedata
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

from example_app.settings import get_settings
from offload.aws import ses
from offload.errors import PermanentTaskError, RecipientNotAllowedError
from offload.observability import logger
from offload.registry import task
from offload.wiring import current

MAX_BODY_CHARS = 100_000


# Control characters (CR, LF, NUL, VT, FF, NEL, ...) and the line and paragraph separators
# U+2028 and U+2029: whatever a mail client or a log might read as a line break or a cut.
NOT_SINGLE_LINE = frozenset({"Cc", "Zl", "Zp"})
# The same characters, searched in C: category Cc is exactly U+0000-U+001F and U+007F-U+009F,
# Zl is U+2028 alone and Zp U+2029 alone.
_NOT_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def single_line(value: Any) -> Any:
    """Refuse text with a character of category Cc, Zl or Zp, anywhere in it.

    Run before other validation (BeforeValidator): whitespace stripping and email
    normalisation would otherwise drop such characters at the ends without a word.
    """
    if isinstance(value, str):
        found = _NOT_SINGLE_LINE.search(value)
        if found is not None:
            char = found.group()
            raise ValueError(
                f"must be a single line of text: U+{ord(char):04X} "
                f"({unicodedata.name(char, 'a control character')}) is not allowed"
            )
    return value


def allowed_recipients() -> frozenset[str]:
    """OFFLOAD_ALLOWED_RECIPIENTS as lower-case addresses and bare domains; empty allows any."""
    entries = (e.strip().lower() for e in get_settings().allowed_recipients.split(","))
    return frozenset(e.removeprefix("@") if e.startswith("@") else e for e in entries if e)


def is_allowed_recipient(address: str) -> bool:
    allowed = allowed_recipients()
    address = address.lower()
    return not allowed or address in allowed or address.rsplit("@", 1)[-1] in allowed


def _allowed(address: str) -> str:
    if not is_allowed_recipient(address):
        raise ValueError("recipient is not allowed on this stage (OFFLOAD_ALLOWED_RECIPIENTS)")
    return address


Subject = Annotated[str, Field(min_length=1, max_length=200), BeforeValidator(single_line)]
# An address, without control characters even at its ends (where EmailStr would strip them).
Address = Annotated[EmailStr, BeforeValidator(single_line)]
# A recipient on this stage's allow-list: checked by the API (422) and again by the task.
Recipient = Annotated[Address, AfterValidator(_allowed)]
Body = Annotated[str, Field(min_length=1, max_length=MAX_BODY_CHARS)]


class EmailContent(BaseModel):
    """An email as a client submits it: a recipient, a subject and a text and/or HTML body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    to: Recipient
    subject: Subject
    text: Body | None = None
    html: Body | None = None

    @model_validator(mode="after")
    def _has_body(self) -> "EmailContent":
        if self.text is None and self.html is None:
            raise ValueError("give a text or an html body, or both")
        return self


# A name of its own (messages say "send_email"); the EmailWorker runs it.
@task(name="send_email", queue="email")
def send_email(
    to: Recipient, subject: Subject, text: Body | None = None, html: Body | None = None
) -> dict[str, Any]:
    """Send one email through SES from the configured sender."""
    if text is None and html is None:
        # Permanent: a retry cannot add the missing body (a ValueError would be retried).
        raise PermanentTaskError("send_email needs a text or an html body")
    # Defence in depth: a message that bypassed the API (or a list changed since) fails for good.
    if not is_allowed_recipient(to):
        raise RecipientNotAllowedError("recipient is not allowed on this stage")
    offload = current()
    message_id = ses.send_email(
        offload.clients.ses,
        sender=offload.settings.sender_email,
        to=to,
        subject=subject,
        text=text,
        html=html,
        needs_seconds=offload.settings.ses_send_seconds,
    )
    logger.info(
        "email sent",
        extra={"ses_message_id": message_id, "recipient_domain": to.rsplit("@", 1)[-1]},
    )
    return {"ses_message_id": message_id}
