"""Plain functions, undecorated, that tests name in messages: the drop-in of FastAPI's
add_task(func, ...). A worker imports this module only when OFFLOAD_TASK_MODULES allows it."""

import os
from datetime import date
from json import dumps

from offload import task

__all__ = ["decorated", "dumps", "greet", "join", "later", "send_on", "spaced"]

join = os.path.join  # a name that refers to a function of another module
calls: list[tuple[str, object]] = []


def greet(name: str, punctuation: str = "!") -> str:
    calls.append(("greet", name))
    return f"hello {name}{punctuation}"


def send_on(day: date, note=""):  # type: ignore[no-untyped-def]  # as FastAPI's tutorial: no hints
    calls.append(("send_on", day))
    return f"{day.isoformat()} {note}".strip()


async def later(name: str) -> str:
    calls.append(("later", name))
    return name.upper()


def spaced(first: str, /, second: str = "-") -> str:
    return f"{first}{second}"


@task(name="tests_plain_decorated")
def decorated(message: str) -> None:
    """A @task with a name of its own: a message must use that name."""


class Greeter:
    def greet(self, name: str) -> str:
        return f"hi {name}"

    @staticmethod
    def shout(name: str) -> str:
        return name.upper()
