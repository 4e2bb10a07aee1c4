"""A plain task function that only a worker's get_task imports, in one test."""


def double(number: int) -> int:
    return 2 * number
