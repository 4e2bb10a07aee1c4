"""Helpers of the reliability suite: free ports and the figures table."""

import socket
from collections.abc import Sequence

# Figures printed by the suite, shown again in pytest's terminal summary (visible without -s).
FIGURES: list[str] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def print_table(title: str, rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    FIGURES.append("\n".join(lines))
    print("\n" + "\n".join(lines))
