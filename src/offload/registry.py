"""Task registry: only functions decorated with @task can ever be named by a message."""

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from offload.errors import PermanentTaskError, TaskError, UnknownTaskError
from offload.queues import QueueName
from offload.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")


class InvalidTaskArgumentsError(PermanentTaskError):
    def __init__(self, kind: str, error: ValidationError) -> None:
        self.kind = kind
        self.errors = error.errors(include_url=False, include_context=False, include_input=False)
        super().__init__(f"invalid arguments for task {kind!r}: {error}")


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    func: Callable[..., Any]
    queue: QueueName
    arguments: type[BaseModel]

    def payload(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Bind call arguments to the signature, validate them, and return JSON-ready data."""
        try:
            bound = inspect.signature(self.func).bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskError(f"task {self.name!r}: {exc}") from exc
        try:
            model = self.arguments.model_validate(bound.arguments)
        except ValidationError as exc:
            raise InvalidTaskArgumentsError(self.name, exc) from exc
        return model.model_dump(mode="json", exclude_unset=True)

    def run(self, payload: dict[str, Any]) -> Any:
        """Validate a payload from a message and call the task with it."""
        try:
            model = self.arguments.model_validate(payload)
        except ValidationError as exc:
            raise InvalidTaskArgumentsError(self.name, exc) from exc
        kwargs = {name: getattr(model, name) for name in model.model_fields_set}
        return self.func(**kwargs)


_registry: dict[str, TaskDefinition] = {}


def _arguments_model(name: str, func: Callable[..., Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"task {name!r}: *args and **kwargs are not supported")
        annotation = Any if param.annotation is param.empty else param.annotation
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    model: type[BaseModel] = create_model(f"{name}_arguments", __config__=config, **fields)
    return model


@overload
def task(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def task(
    *, name: str | None = None, queue: QueueName = "tasks"
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def task(
    func: Callable[P, R] | None = None, /, *, name: str | None = None, queue: QueueName = "tasks"
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a function as a task. Its arguments are validated from its type hints."""

    def register(f: Callable[P, R]) -> Callable[P, R]:
        task_name = name or f.__name__
        existing = _registry.get(task_name)
        if existing is not None and existing.func is not f:
            raise ValueError(f"a task named {task_name!r} is already registered")
        _registry[task_name] = TaskDefinition(task_name, f, queue, _arguments_model(task_name, f))
        f.__offload_task__ = task_name  # type: ignore[attr-defined]
        return f

    return register(func) if func is not None else register


def load_task_modules() -> None:
    """Import the modules that define tasks, so that their @task decorators run."""
    modules = tuple(m.strip() for m in get_settings().task_modules.split(",") if m.strip())
    _import_modules(modules)


@cache
def _import_modules(modules: tuple[str, ...]) -> None:
    # Once per list of modules: get_task runs for every record on a worker's hot path.
    for module in modules:
        importlib.import_module(module)


def get_task(name: str) -> TaskDefinition:
    load_task_modules()
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTaskError(f"no task named {name!r} is registered") from None


def definition_of(func: Callable[..., Any]) -> TaskDefinition:
    """The registration of a decorated function; refuses anything that is not a task."""
    task_name = getattr(func, "__offload_task__", None)
    if task_name is None or _registry.get(task_name) is None:
        raise UnknownTaskError(
            f"{getattr(func, '__qualname__', func)!r} is not a registered task; decorate it with "
            "@offload.task"
        )
    definition = _registry[task_name]
    if definition.func is not func:
        raise UnknownTaskError(f"{func!r} is not the function registered as {task_name!r}")
    return definition
