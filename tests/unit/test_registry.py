"""The task registry: what a call and a message may name, and how the arguments are validated.

A plain top-level function is a task as it is, named module:qualname; a worker imports it only
from a module on the allow-list (OFFLOAD_TASK_MODULES), after checking the name's grammar.
"""

import functools
import sys
from datetime import date
from typing import Any

import pytest

from example_app.emails import send_email
from example_app.notifications import write_log
from offload import in_process
from offload.errors import PermanentTaskError, TaskError, UnknownTaskError
from offload.fastapi import DurableBackgroundTasks
from offload.registry import (
    InvalidTaskArgumentsError,
    NotSendableError,
    allowed_module,
    check_importable,
    definition_of,
    get_task,
    task,
)
from offload.settings import Settings
from offload.wiring import build
from tests.unit import plain_tasks

PLAIN = "tests.unit.plain_tasks"
NEVER = "tests.unit.never_imported"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/offload-test-tasks"


def background_tasks(modules: str = "", *, durable: bool = False) -> DurableBackgroundTasks:
    """A request's tasks, with OFFLOAD_TASK_MODULES = `modules` (as the template sets it on the
    API and the workers); `durable`: a queue is configured, add_task prepares messages for a
    worker."""
    urls = {"tasks": QUEUE_URL, "email": QUEUE_URL} if durable else {}
    return DurableBackgroundTasks(build(Settings(task_modules=modules, queue_urls=urls)))


def make_closure() -> Any:
    greeting = "hello"

    def closure(name: str) -> str:
        return f"{greeting} {name}"

    return closure


def nested(name: str) -> Any:
    def inner(message: str) -> None: ...

    return inner


class DatabaseSession:
    """What a FastAPI dependency hands an endpoint: not data, a live object."""


def save(session: DatabaseSession, row: int) -> None: ...


def _private(message: str) -> None: ...


def save_anything(session, row: int) -> None:  # type: ignore[no-untyped-def]
    ...


NOT_SENDABLE = {
    "lambda": (lambda message: None, "it is a lambda"),
    "closure": (make_closure(), "defined inside another function"),
    "nested": (nested("x"), "defined inside another function"),
    "bound-method": (plain_tasks.Greeter().greet, "bound method"),
    "static-method": (plain_tasks.Greeter.shout, "not at the top level"),
    "private": (_private, "private"),
    "builtin": (print, "not a plain Python function"),
    "partial": (functools.partial(plain_tasks.greet, "ann"), "not a plain Python function"),
}


# --------------------------------------------------------------------------- naming


def test_registered_functions_are_found_by_name_and_by_reference() -> None:
    assert get_task("write_log", "").func is write_log
    assert definition_of(write_log).queue == "tasks"
    assert definition_of(send_email).queue == "email"


def test_a_plain_function_is_named_by_its_module_and_qualified_name(env: None) -> None:
    definition = definition_of(plain_tasks.greet)

    assert (definition.name, definition.queue, definition.declared) == (
        f"{PLAIN}:greet",
        "tasks",
        False,
    )
    assert definition.payload("ann") == {"name": "ann"}


def test_a_task_is_named_by_module_and_qualified_name_unless_given_a_name() -> None:
    @task
    def fresh_default(message: str) -> None: ...

    assert definition_of(fresh_default).name == (
        f"{__name__}:test_a_task_is_named_by_module_and_qualified_name_unless_given_a_name"
        ".<locals>.fresh_default"
    )
    assert definition_of(plain_tasks.decorated).name == "tests_plain_decorated"


@pytest.mark.parametrize("func", [v[0] for v in NOT_SENDABLE.values()], ids=list(NOT_SENDABLE))
def test_what_a_worker_could_not_import_is_not_sendable(func: Any) -> None:
    reason = next(r for f, r in NOT_SENDABLE.values() if f is func)

    with pytest.raises(NotSendableError, match=reason) as caught:
        definition_of(func)

    assert isinstance(caught.value, TypeError)
    assert "cannot be sent to a worker" in str(caught.value)


def test_a_function_pretending_to_be_a_task_is_refused() -> None:
    def impostor(message: str) -> None: ...

    impostor.__offload_task__ = "write_log"  # type: ignore[attr-defined]

    with pytest.raises(UnknownTaskError, match="not the function registered"):
        definition_of(impostor)


def test_an_argument_type_that_is_not_data_is_not_sendable_and_named() -> None:
    with pytest.raises(NotSendableError, match="argument 'session'"):
        definition_of(save)


def test_an_unhinted_argument_that_is_not_data_is_not_sendable_and_named(env: None) -> None:
    definition = definition_of(save_anything)

    with pytest.raises(NotSendableError, match=r"argument 'session'.*not JSON data"):
        definition.payload(DatabaseSession(), row=1)
    assert definition.payload({"id": 7}, row=1) == {"session": {"id": 7}, "row": 1}


# --------------------------------------------------------------------------- names in messages


def test_unknown_task_name_is_permanent() -> None:
    with pytest.raises(UnknownTaskError, match="no task named 'rm_rf'") as caught:
        get_task("rm_rf", "")
    assert isinstance(caught.value, PermanentTaskError)


def test_a_worker_imports_a_plain_function_from_an_allowed_module(env: None) -> None:
    modules = "tests.unit.lazy_tasks"
    assert "tests.unit.lazy_tasks" not in sys.modules  # as in a fresh worker

    definition = get_task("tests.unit.lazy_tasks:double", modules)

    assert definition.func is sys.modules["tests.unit.lazy_tasks"].double
    assert definition.run({"number": "21"}) == 42


@pytest.mark.parametrize("allowed", ["tests.unit", "tests", f"{PLAIN}, example_app.emails"])
def test_an_entry_allows_its_module_and_the_modules_of_its_package(env: None, allowed: str) -> None:
    modules = allowed

    assert get_task(f"{PLAIN}:greet", modules).func is plain_tasks.greet


@pytest.mark.parametrize(
    "name",
    [
        f"{NEVER}:boom",  # well formed, not allowed
        "os:system",
        "subprocess:run",
        "tests:unit",
        f"{NEVER}.__init__:boom",
        f"{NEVER}:__init__",
        f"{NEVER}: boom",
        f" {NEVER}:boom",
        f"{NEVER}:boom:boom",
        f".{NEVER}:boom",
        f"{NEVER}/..:boom",
        "tests..unit:x",
        "__import__('tests.unit.never_imported')",
        f"{NEVER}:boom()",
        f"{NEVER}:boom.__globals__",
        f"{PLAIN}:Greeter.shout",
        "",
        ":",
        PLAIN,
        NEVER,
    ],
)
def test_a_name_outside_the_allow_list_or_the_grammar_is_unknown_and_never_imported(
    env: None, name: str
) -> None:
    modules = f"{PLAIN},example_app"

    with pytest.raises(UnknownTaskError):
        get_task(name, modules)

    assert NEVER not in sys.modules


def test_an_entry_is_a_module_or_a_package_not_a_prefix_of_characters(env: None) -> None:
    modules = "tests.unit.never, example_app"

    assert allowed_module("tests.unit.never", modules)
    assert allowed_module("tests.unit.never.sub", modules)
    assert not allowed_module(NEVER, modules)
    assert allowed_module("example_app.emails", modules)
    assert not allowed_module("example_application", modules)
    assert NEVER not in sys.modules


def test_with_no_allow_list_only_registered_tasks_run(env: None) -> None:
    modules = ""

    with pytest.raises(UnknownTaskError, match="not in OFFLOAD_TASK_MODULES"):
        get_task(f"{PLAIN}:greet", modules)
    assert get_task("tests_plain_decorated", modules).func is plain_tasks.decorated


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (f"{PLAIN}:join", "posixpath"),  # another module's function, imported here
        (f"{PLAIN}:dumps", "json"),
        (f"{PLAIN}:Greeter", "defines no function"),
        (f"{PLAIN}:calls", "defines no function"),
        (f"{PLAIN}:missing", "defines no function"),
        (f"{PLAIN}:decorated", "is the task named 'tests_plain_decorated'"),
        ("tests.unit.no_such_module:f", "there is no module"),
    ],
)
def test_an_allowed_module_yields_only_its_own_plain_functions(
    env: None, name: str, reason: str
) -> None:
    modules = "tests.unit"

    with pytest.raises(UnknownTaskError, match=reason):
        get_task(name, modules)


def test_a_function_of_a_module_that_is_not_allowed_is_refused_when_sent(env: None) -> None:
    modules = "example_app.emails"

    with pytest.raises(NotSendableError, match=f"Add {PLAIN} .*OFFLOAD_TASK_MODULES"):
        check_importable(definition_of(plain_tasks.greet), modules)
    check_importable(
        definition_of(plain_tasks.decorated), modules
    )  # @task: registered, not imported

    modules = "tests.unit"
    check_importable(definition_of(plain_tasks.greet), modules)


def test_a_bad_allow_list_entry_is_an_error(env: None) -> None:
    modules = "example_app.emails, ../etc"

    with pytest.raises(ValueError, match=r"OFFLOAD_TASK_MODULES: '\.\./etc'"):
        get_task("write_log", modules)


# --------------------------------------------------------------------------- calling


def test_an_async_task_runs_to_completion(env: None) -> None:
    definition = definition_of(plain_tasks.later)

    assert definition.run(definition.payload("ann")) == "ANN"


def test_positional_only_arguments_travel_by_name(env: None) -> None:
    definition = definition_of(plain_tasks.spaced)

    payload = definition.payload("a", second="+")

    assert payload == {"first": "a", "second": "+"}
    assert definition.run(payload) == "a+"
    assert definition.run({"first": "b"}) == "b-"


def test_an_unhinted_argument_travels_as_json(env: None) -> None:
    definition = definition_of(plain_tasks.send_on)

    payload = definition.payload(date(2026, 1, 2))

    assert payload == {"day": "2026-01-02"}
    assert definition.run(payload) == "2026-01-02"


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


# --------------------------------------------------------------------------- add_task


def test_add_task_returns_distinct_ids_and_keeps_the_calls() -> None:
    tasks = background_tasks()

    first = tasks.add_task(write_log, "one")
    second = tasks.add_task(write_log, message="two")

    assert first != second
    assert [c.payload for c in tasks.pending] == [{"message": "one"}, {"message": "two"}]  # type: ignore[union-attr]
    assert [c.task_id for c in tasks.pending] == [first, second]


def test_add_task_validates_at_once() -> None:
    tasks = background_tasks()

    with pytest.raises(InvalidTaskArgumentsError):
        tasks.add_task(send_email, to="not-an-address", subject="Hi", text="t")
    assert tasks.pending == []


def test_add_task_validates_a_plain_function_from_its_hints(env: None) -> None:
    modules = PLAIN
    tasks = background_tasks(modules, durable=True)

    tasks.add_task(plain_tasks.greet, "ann")
    with pytest.raises(InvalidTaskArgumentsError) as caught:
        tasks.add_task(plain_tasks.greet, ["not", "a", "name"])

    [call] = tasks.pending
    assert (call.kind, call.payload) == (f"{PLAIN}:greet", {"name": "ann"})  # type: ignore[union-attr]
    assert caught.value.kind == f"{PLAIN}:greet"


@pytest.mark.parametrize(
    ("func", "args", "reason"),
    [
        *[(f, ("x",), r) for f, r in (v for k, v in NOT_SENDABLE.items() if k != "partial")],
        (functools.partial(plain_tasks.greet, "ann"), (), "not a plain Python function"),
        (save_anything, (DatabaseSession(), 1), "argument 'session'"),
        (save, (DatabaseSession(), 1), "argument 'session'"),
        (plain_tasks.greet, ("ann",), "not in OFFLOAD_TASK_MODULES"),
    ],
    ids=[*(k for k in NOT_SENDABLE if k != "partial"), "partial", "unhinted", "hinted", "module"],
)
def test_durable_add_task_refuses_what_cannot_be_sent_and_keeps_nothing(
    env: None, func: Any, args: tuple[Any, ...], reason: str
) -> None:
    modules = f"{__name__},example_app.emails,example_app.notifications"
    tasks = background_tasks(modules, durable=True)

    with pytest.raises(TypeError, match=reason):
        tasks.add_task(func, *args)

    assert tasks.pending == []


@pytest.mark.parametrize(
    ("func", "args"),
    [
        *[(f, ("x",)) for f, _ in (v for k, v in NOT_SENDABLE.items() if k != "partial")],
        (functools.partial(plain_tasks.greet, "ann"), ()),
        (save, (DatabaseSession(), 1)),
    ],
    ids=[*(k for k in NOT_SENDABLE if k != "partial"), "partial", "session"],
)
def test_without_a_queue_what_cannot_be_sent_is_kept_to_run_in_process(
    env: None, func: Any, args: tuple[Any, ...]
) -> None:
    tasks = background_tasks()

    tasks.add_task(func, *args)

    [call] = tasks.pending
    assert isinstance(call, in_process.LocalCall)
    assert (call.function, call.args) == (func, args)
    assert "cannot be sent" in call.reason


# --------------------------------------------------------------------------- @task


def test_star_args_cannot_be_registered() -> None:
    with pytest.raises(TypeError, match=r"\*args"):

        @task(name="tests_star_args")
        def star(*messages: str) -> None: ...


def test_a_second_function_cannot_take_a_registered_name() -> None:
    with pytest.raises(ValueError, match="is taken") as caught:

        @task(name="write_log")
        def other_write_log(message: str) -> None: ...

    assert "example_app.notifications:write_log" in str(caught.value)
    assert "other_write_log" in str(caught.value)
    assert get_task("write_log", "").func is write_log


def test_names_of_tasks_in_different_modules_do_not_collide() -> None:
    # A user's own write_log next to the example app's: each keeps its name.
    @task
    def write_log(message: str) -> None: ...

    assert definition_of(write_log).name.endswith(".<locals>.write_log")
    assert get_task(definition_of(write_log).name, "").func is write_log
    assert get_task("write_log", "").func is not write_log


@pytest.mark.parametrize("name", ["", "billing:charge", "x" * 129])
def test_a_given_name_must_not_look_like_a_module_name(name: str) -> None:
    with pytest.raises(ValueError, match="without ':'"):
        task(name=name)


def test_the_same_function_defined_again_replaces_its_registration() -> None:
    # As when its module is reloaded: the same module and qualified name, a new function.
    def define() -> Any:
        @task(name="tests_defined_twice")
        def twice(message: str) -> None: ...

        return twice

    define()
    again = define()

    assert get_task("tests_defined_twice", "").func is again
