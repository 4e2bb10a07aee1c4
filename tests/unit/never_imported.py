"""A module that no message may make a worker import: it sits outside OFFLOAD_TASK_MODULES."""

raise AssertionError(f"{__name__} was imported on a message's word")


def boom() -> None: ...  # pragma: no cover
