"""The task registry: only @task functions can be named, and their arguments are validated."""

from typing import Any

import pytest

from example_app.emails import send_email
from example_app.notifications import write_log
from offload.errors import PermanentTaskError, TaskError, UnknownTaskError
from offload.fastapi import DurableBackgroundTasks
from offload.registry import InvalidTaskArgumentsError, definition_of, get_task, task


def plain_function(message: str) -> None:
    """Not decorated: never runnable from a message."""


def test_registered_functions_are_found_by_name_and_by_reference() -> None:
    assert get_task("write_log").func is write_log
    assert definition_of(write_log).queue == "tasks"
    assert definition_of(send_email).queue == "email"


@pytest.mark.parametrize("func", [plain_function, print, lambda message: None])
def test_only_task_functions_are_accepted(func: Any) -> None:
    with pytest.raises(UnknownTaskError, match="not a registered task"):
        definition_of(func)
    with pytest.raises(UnknownTaskError):
        DurableBackgroundTasks().add_task(func, "hello")


def test_a_function_pretending_to_be_a_task_is_refused() -> None:
    def impostor(message: str) -> None: ...

    impostor.__offload_task__ = "write_log"  # type: ignore[attr-defined]

    with pytest.raises(UnknownTaskError, match="not the function registered"):
        definition_of(impostor)


def test_unknown_task_name_is_permanent() -> None:
    with pytest.raises(UnknownTaskError, match="no task named 'rm_rf'") as caught:
        get_task("rm_rf")
    assert isinstance(caught.value, PermanentTaskError)


def test_payload_binds_positional_and_keyword_arguments() -> None:
    definition = definition_of(write_log)

    assert definition.payload("hi") == {"message": "hi"}
    assert definition.payload(message="hi") == {"message": "hi"}


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), (("a", "b"), {}), ((), {"message": "a", "level": "info"})],
    ids=["missing", "too-many", "unexpected-keyword"],
)
def test_payload_refuses_calls_that_do_not_fit_the_signature(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TaskError, match="write_log"):
        definition_of(write_log).payload(*args, **kwargs)


@pytest.mark.parametrize("value", [123, None, ["a"], {"a": 1}])
def test_payload_validates_types(value: Any) -> None:
    with pytest.raises(InvalidTaskArgumentsError) as caught:
        definition_of(write_log).payload(value)
    assert caught.value.errors[0]["loc"] == ("message",)


def test_payload_is_json_ready_and_omits_unset_defaults() -> None:
    payload = definition_of(send_email).payload(to="a@example.com", subject="Hi", text="t")

    assert payload == {"to": "a@example.com", "subject": "Hi", "text": "t"}


@pytest.mark.parametrize(
    "payload",
    [{"message": 1}, {}, {"message": "x", "extra": 1}],
    ids=["wrong-type", "missing", "extra-field"],
)
def test_run_validates_the_payload_from_a_message(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidTaskArgumentsError) as caught:
        definition_of(write_log).run(payload)
    assert isinstance(caught.value, PermanentTaskError)


def test_add_task_returns_distinct_ids_and_keeps_the_calls() -> None:
    tasks = DurableBackgroundTasks()

    first = tasks.add_task(write_log, "one")
    second = tasks.add_task(write_log, message="two")

    assert first != second
    assert [c.payload for c in tasks.pending] == [{"message": "one"}, {"message": "two"}]
    assert [c.task_id for c in tasks.pending] == [first, second]


def test_add_task_validates_at_once() -> None:
    tasks = DurableBackgroundTasks()

    with pytest.raises(InvalidTaskArgumentsError):
        tasks.add_task(send_email, to="not-an-address", subject="Hi", text="t")
    assert tasks.pending == []


def test_star_args_cannot_be_registered() -> None:
    with pytest.raises(TypeError, match=r"\*args"):

        @task(name="tests_star_args")
        def star(*messages: str) -> None: ...


def test_a_second_function_cannot_take_a_registered_name() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @task(name="write_log")
        def other_write_log(message: str) -> None: ...

    assert get_task("write_log").func is write_log
