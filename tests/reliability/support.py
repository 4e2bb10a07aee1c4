"""Helpers of the reliability suite: the figures table."""

from collections.abc import Sequence

# Figures printed by the suite, shown again in pytest's terminal summary (visible without -s).
FIGURES: list[str] = []


def print_table(title: str, rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    FIGURES.append("\n".join(lines))
    print("\n" + "\n".join(lines))
