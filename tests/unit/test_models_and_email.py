"""The task message contract and the validated email, without AWS."""

import json
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from example_app.emails import MAX_BODY_CHARS, EmailContent, send_email
from offload.errors import InvalidMessageError, PermanentTaskError
from offload.models import TaskMessage, TaskState
from offload.registry import InvalidTaskArgumentsError, definition_of
from offload.worker.sources import parse_message
from tests.support import load_event

GOOD = {"to": "ann@example.com", "subject": "Hello", "text": "Body"}


def test_sample_event_bodies_are_task_messages() -> None:
    for name in ("sqs-task-worker.json", "sqs-email-worker.json"):
        good = load_event(name)["Records"][:2]
        for record in good:
            message = parse_message(record["body"])
            assert message.task_id == UUID(record["messageAttributes"]["task_id"]["stringValue"])
            assert message.kind == record["messageAttributes"]["kind"]["stringValue"]


def test_message_round_trips_through_json() -> None:
    message = TaskMessage(kind="write_log", payload={"message": "hi"}, correlation_id="abc")

    assert parse_message(message.model_dump_json()) == message


@pytest.mark.parametrize(
    "body",
    [
        "Notification sent to eve@example.com",
        "",
        "[]",
        json.dumps({"kind": "write_log", "payload": {}, "task_id": "not-a-uuid"}),
        json.dumps({"kind": "", "payload": {}}),
        json.dumps({"kind": "write_log", "payload": "text"}),
        json.dumps({"kind": "write_log", "payload": {}, "command": "rm -rf /"}),
        json.dumps({"kind": "write_log", "correlation_id": "x" * 129}),
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "bad-uuid",
        "empty-kind",
        "payload-not-object",
        "extra-field",
        "long-correlation-id",
    ],
)
def test_bad_bodies_are_invalid_messages(body: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(body)
    assert isinstance(caught.value, PermanentTaskError)


def test_final_states() -> None:
    assert {s for s in TaskState if s.is_final} == {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.DEAD,
        TaskState.CANCELLED,
    }


def test_a_valid_email() -> None:
    email = EmailContent.model_validate({**GOOD, "html": "<p>Body</p>"})

    assert email.to == "ann@example.com"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to": "ann.example.com"}, "to"),
        ({"to": "ann@localhost"}, "to"),
        ({"to": "ann@example.com\nBcc: x@example.com"}, "to"),
        ({"subject": "Hi\r\nBcc: everyone@example.com"}, "subject"),
        ({"subject": "Hi\nthere"}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "s" * 201}, "subject"),
        ({"text": "x" * (MAX_BODY_CHARS + 1)}, "text"),
        ({"text": ""}, "text"),
        ({"cc": "x@example.com"}, "cc"),
    ],
)
def test_invalid_emails_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EmailContent.model_validate({**GOOD, **change})
    assert field in [e["loc"][0] for e in caught.value.errors()]


def test_an_email_needs_a_body() -> None:
    with pytest.raises(ValidationError, match="text or an html body"):
        EmailContent.model_validate({"to": "ann@example.com", "subject": "Hi"})


def test_the_task_arguments_enforce_the_same_rules() -> None:
    definition = definition_of(send_email)

    with pytest.raises(InvalidTaskArgumentsError) as caught:
        definition.payload(to="ann@example.com", subject="Hi\r\nBcc: x@example.com", text="t")
    assert caught.value.errors[0]["loc"] == ("subject",)
    with pytest.raises(InvalidTaskArgumentsError):
        definition.payload(to="ann@example.com", subject="Hi", text="x" * (MAX_BODY_CHARS + 1))


def test_send_email_without_a_body_fails_permanently() -> None:
    # A task enqueued without any body must not be retried five times.
    with pytest.raises(PermanentTaskError, match="text or an html body"):
        definition_of(send_email).run({"to": "ann@example.com", "subject": "Hi"})


def test_the_single_line_pattern_refuses_exactly_the_categories_it_names() -> None:
    # The regular expression that single_line searches with, against unicodedata itself, for
    # every code point: the fast search refuses the same characters as the category rule.
    import sys
    import unicodedata

    from example_app.emails import _NOT_SINGLE_LINE, NOT_SINGLE_LINE

    differ = [
        f"U+{ord(c):04X}"
        for c in map(chr, range(sys.maxunicode + 1))
        if (unicodedata.category(c) in NOT_SINGLE_LINE) != bool(_NOT_SINGLE_LINE.fullmatch(c))
    ]
    assert differ == []
