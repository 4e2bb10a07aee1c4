"""A user's own tasks, in their own module, next to the example app's: the same short names."""

from offload import task

effects: list[tuple[str, object]] = []


@task
def write_log(message: str) -> str:
    """Registered as tests.integration.own_tasks:write_log; the example app's is "write_log"."""
    effects.append(("write_log", message))
    return message


class Session:
    """A database session, as a FastAPI dependency would give one: a live object, not data."""

    def add(self, row: int) -> None:
        effects.append(("saved", row))


def save(session: Session, row: int) -> None:
    session.add(row)
