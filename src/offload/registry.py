"""Task registry: which functions a message may name, and how their arguments travel.

A task is named by its module and qualified name, `"myapp.tasks:write_log"`, unless
`@task(name=...)` gives it a name of its own. `add_task` accepts a `@task` function or any plain
function defined at the top level of an importable module, and validates the call's arguments
from its type hints. A worker runs a name only if it is a registered `@task`, or if it has the
`module:function` form and its module is on the allow-list, OFFLOAD_TASK_MODULES (see
`allowed_module`). The name is checked, and the allow-list consulted, before anything is
imported: a message can never make a worker import a module of its choosing.
"""

import asyncio
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.errors import PydanticUserError
from pydantic_core import PydanticSerializationError

from offload.errors import PermanentTaskError, TaskError, UnknownTaskError
from offload.queues import QueueName

P = ParamSpec("P")
R = TypeVar("R")

# The grammar of a task's name: `package.module:function`, ASCII identifiers only.
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*")
_FUNCTION = re.compile(_IDENTIFIER)
MAX_NAME_LENGTH = 128  # TaskMessage.kind


class InvalidTaskArgumentsError(PermanentTaskError):
    def __init__(self, kind: str, error: ValidationError) -> None:
        self.kind = kind
        self.errors = error.errors(include_url=False, include_context=False, include_input=False)
        super().__init__(f"invalid arguments for task {kind!r}: {error}")


class NotSendableError(TaskError, TypeError):
    """A call that cannot travel in a message to a worker: a lambda, a closure, a bound method,
    a function of a module outside OFFLOAD_TASK_MODULES, or an argument that is not JSON data
    (a database session). It can only run in-process."""


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    func: Callable[..., Any]
    queue: QueueName
    arguments: type[BaseModel]
    declared: bool = True  # by @task; False: a plain function, named by module:qualname

    @cached_property
    def signature(self) -> inspect.Signature:
        """The function's signature, read once (inspect.signature costs each call)."""
        return inspect.signature(self.func)

    def payload(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Bind call arguments to the signature, validate them, and return JSON-ready data."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskError(f"task {self.name!r}: {exc}") from exc
        try:
            model = self.arguments.model_validate(bound.arguments)
        except ValidationError as exc:
            raise InvalidTaskArgumentsError(self.name, exc) from exc
        try:
            return model.model_dump(mode="json", exclude_unset=True)
        except PydanticSerializationError as exc:
            raise NotSendableError(
                f"task {self.name!r}: argument {_unserialisable(model)!r} cannot be sent in a "
                f"message, it is not JSON data ({exc}); pass what the task needs to rebuild it "
                "(an id, not a database session), or give the argument a type hint"
            ) from exc

    def run(self, payload: dict[str, Any]) -> Any:
        """Validate a payload from a message and call the task with it."""
        try:
            model = self.arguments.model_validate(payload)
        except ValidationError as exc:
            raise InvalidTaskArgumentsError(self.name, exc) from exc
        arguments = {name: getattr(model, name) for name in model.model_fields_set}
        bound = inspect.BoundArguments(self.signature, arguments)
        return call(self.func, *bound.args, **bound.kwargs)


def call(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call a task function; a coroutine function runs to completion on an event loop of its own.

    Not asyncio.run: that would leave the thread without a current event loop, which breaks
    code that asks for one later (Mangum does, in the same process under tests).
    """
    if not inspect.iscoroutinefunction(func):
        return func(*args, **kwargs)
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(func(*args, **kwargs))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _unserialisable(model: BaseModel) -> str:
    for field in sorted(model.model_fields_set):
        try:
            model.model_dump(mode="json", include={field})
        except PydanticSerializationError:
            return field
    return "?"


# Functions registered with @task, by name.
_registry: dict[str, TaskDefinition] = {}
# Plain functions met by add_task or resolved by a worker, by module:qualname.
_plain: dict[str, TaskDefinition] = {}


def _arguments_model(name: str, func: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of the function's parameters, from its type hints (NotSendableError if
    they cannot travel as JSON)."""
    try:
        parameters = list(inspect.signature(func, eval_str=True).parameters.values())
    except NameError as exc:
        raise NotSendableError(f"task {name!r}: its type hints cannot be evaluated: {exc}") from exc
    fields: dict[str, Any] = {}
    for param in parameters:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise NotSendableError(
                f"task {name!r}: *args and **kwargs are not supported: a message carries named "
                "arguments only"
            )
        annotation = Any if param.annotation is param.empty else param.annotation
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    try:
        model: type[BaseModel] = create_model(f"{name}_arguments", __config__=config, **fields)
    except PydanticUserError as exc:
        culprit = next(
            (p for p, spec in fields.items() if not _fits(spec)), next(iter(fields), "?")
        )
        raise NotSendableError(
            f"task {name!r}: argument {culprit!r} has a type that cannot be sent in a message "
            f"({fields[culprit][0]!r} is not JSON data pydantic can validate): {exc}"
        ) from exc
    return model


def _fits(spec: tuple[Any, Any]) -> bool:
    try:
        create_model("probe", value=spec)
    except PydanticUserError:
        return False
    return True


def _describe(func: Any) -> str:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else repr(func)


def name_of(func: Callable[..., Any]) -> str:
    """The name a task call records: its @task name, else module:qualname (or a description)."""
    declared = getattr(func, "__offload_task__", None)
    return declared if isinstance(declared, str) else _describe(func)[:MAX_NAME_LENGTH]


def queue_of(func: Callable[..., Any]) -> QueueName:
    """The queue a call of this function goes to: its @task queue, else the tasks queue."""
    definition = _registry.get(getattr(func, "__offload_task__", None) or "")
    return definition.queue if definition is not None and definition.func is func else "tasks"


@overload
def task(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def task(
    *, name: str | None = None, queue: QueueName = "tasks"
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def task(
    func: Callable[P, R] | None = None, /, *, name: str | None = None, queue: QueueName = "tasks"
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a function as a task. Its arguments are validated from its type hints.

    Its name is `module:qualname` (unique), unless `name=` gives one: that name must not
    contain ':', and two functions may not share it (ValueError, at import time).
    """
    if name is not None and (not name or ":" in name or len(name) > MAX_NAME_LENGTH):
        raise ValueError(
            f"task name {name!r}: give 1 to {MAX_NAME_LENGTH} characters without ':' "
            "(module:function names are the default names)"
        )

    def register(f: Callable[P, R]) -> Callable[P, R]:
        task_name = name or f"{f.__module__}:{f.__qualname__}"
        existing = _registry.get(task_name)
        if existing is not None and _describe(existing.func) != _describe(f):
            raise ValueError(
                f"task name {task_name!r} is taken: {_describe(existing.func)} is registered "
                f"under it, so {_describe(f)} cannot be; give one of them another name"
            )
        # The same function defined again (its module reloaded) replaces its old definition.
        _registry[task_name] = TaskDefinition(task_name, f, queue, _arguments_model(task_name, f))
        f.__offload_task__ = task_name  # type: ignore[attr-defined]
        return f

    return register(func) if func is not None else register


def definition_of(func: Callable[..., Any]) -> TaskDefinition:
    """The definition of a @task function, or of a plain function a worker can import by name.

    Raises NotSendableError for what a worker could never import (a lambda, a closure, a
    nested function, a bound method, a builtin, a function of __main__), and UnknownTaskError
    for a function that carries the mark of a task it is not.
    """
    declared = getattr(func, "__offload_task__", None)
    if declared is not None:
        definition = _registry.get(declared)
        if definition is None or definition.func is not func:
            raise UnknownTaskError(f"{func!r} is not the function registered as {declared!r}")
        return definition
    problem = _not_importable(func)
    if problem is not None:
        raise NotSendableError(
            f"{_describe(func)} cannot be sent to a worker: {problem}. Pass a function defined "
            "at the top level of a module (the worker imports it by name), or run it in-process"
        )
    name = f"{func.__module__}:{func.__qualname__}"
    definition = _plain.get(name)
    if definition is None or definition.func is not func:
        definition = TaskDefinition(name, func, "tasks", _arguments_model(name, func), False)
        _plain[name] = definition
    return definition


def _current(module: str, name: str) -> Any:
    """What the name refers to in the module as it is loaded now, if it is loaded."""
    return getattr(sys.modules.get(module), name, None)


def _not_importable(func: Any) -> str | None:
    """Why a worker could not find this function again by its module and name, if it could not."""
    if inspect.ismethod(func):
        return "it is a bound method"
    if not inspect.isfunction(func):
        return "it is not a plain Python function (a builtin, a class, a partial or an object)"
    module, name = func.__module__, func.__qualname__
    problems = (
        (func.__name__ == "<lambda>", "it is a lambda"),
        ("<locals>" in name, "it is defined inside another function (a closure or a nested one)"),
        (name != func.__name__, "it is not at the top level of its module"),
        (
            module == "__main__" or not _MODULE.fullmatch(module or ""),
            f"its module, {module}, cannot be imported by that name",
        ),
        (not _FUNCTION.fullmatch(name), "its name is not an ASCII identifier"),
        (name.startswith("_"), "it is private (its name starts with _)"),
        (_current(module, name) is not func, f"{module}.{name} is now another object"),
        (
            len(module) + 1 + len(name) > MAX_NAME_LENGTH,
            f"its module and name are longer than {MAX_NAME_LENGTH} characters",
        ),
    )
    return next((problem for found, problem in problems if found), None)


def task_modules(modules: str) -> tuple[str, ...]:
    """`modules` (OFFLOAD_TASK_MODULES): module names or package prefixes, comma separated."""
    entries = tuple(m.strip() for m in modules.split(",") if m.strip())
    for entry in entries:
        if not _MODULE.fullmatch(entry):
            raise ValueError(f"OFFLOAD_TASK_MODULES: {entry!r} is not a module name")
    return entries


def allowed_module(module: str, modules: str) -> bool:
    """A worker may import this module to find a task: it is an entry of `modules`
    (OFFLOAD_TASK_MODULES), or inside a package that is. Empty, no module is: only registered
    @task functions run."""
    entries = task_modules(modules)
    return any(module == entry or module.startswith(f"{entry}.") for entry in entries)


def check_importable(definition: TaskDefinition, modules: str) -> None:
    """Refuse, when a call is sent, a plain function that the workers would refuse to import."""
    if definition.declared:
        return  # a @task function: its module is loaded by the worker's OFFLOAD_TASK_MODULES
    module = definition.name.partition(":")[0]
    if not allowed_module(module, modules):
        raise NotSendableError(
            f"{definition.name} cannot be sent to a worker: its module is not in "
            f"OFFLOAD_TASK_MODULES ({modules or 'unset'}), so a worker "
            f"would refuse to import it. Add {module} (or its package) to OFFLOAD_TASK_MODULES "
            "on the API and on the workers"
        )


def load_task_modules(modules: str) -> None:
    """Import the modules of `modules` (OFFLOAD_TASK_MODULES), so that their @task decorators
    run."""
    _import_modules(task_modules(modules))


@cache
def _import_modules(modules: tuple[str, ...]) -> None:
    # Once per list of modules: get_task runs for every record on a worker's hot path.
    for module in modules:
        importlib.import_module(module)


def get_task(name: str, modules: str) -> TaskDefinition:
    """The task a message names: a registered @task, or a plain function of an allowed module.

    Anything else is an UnknownTaskError (permanent: the message goes to the DLQ). A name is
    checked against the grammar `module:function` and the allow-list (`modules`, the value of
    OFFLOAD_TASK_MODULES) before any import.
    """
    load_task_modules(modules)
    definition = _registry.get(name)
    if definition is not None:
        return definition
    module_name, colon, function_name = name.partition(":")
    if not (colon and _MODULE.fullmatch(module_name) and _FUNCTION.fullmatch(function_name)):
        raise UnknownTaskError(f"no task named {name!r} is registered")
    if not allowed_module(module_name, modules):
        raise UnknownTaskError(
            f"no task named {name!r} is registered, and its module is not in "
            "OFFLOAD_TASK_MODULES: it was not imported"
        )
    definition = _plain.get(name)
    if definition is not None and _current(module_name, function_name) is definition.func:
        return definition
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (module_name == missing or module_name.startswith(f"{missing}.")):
            raise  # one of the module's own imports is missing: a deployment error, retried
        raise UnknownTaskError(f"task {name!r}: there is no module {module_name}") from exc
    definition = _registry.get(name)  # its @task decorators ran on import
    if definition is not None:
        return definition
    func = getattr(module, function_name, None)
    declared = getattr(func, "__offload_task__", None)
    if declared is not None:
        raise UnknownTaskError(f"task {name!r}: that function is the task named {declared!r}")
    try:
        definition = definition_of(func) if inspect.isfunction(func) else None
    except NotSendableError as exc:
        raise UnknownTaskError(f"task {name!r}: {exc}") from exc
    if definition is None or definition.name != name:
        raise UnknownTaskError(f"task {name!r}: {module_name} defines no function {function_name}")
    return definition
