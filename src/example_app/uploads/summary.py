"""Per-column aggregates, updated one batch (a list of cells) at a time.

Types are inferred from every value, in this order of preference: integer, float, boolean
(true/false/yes/no), date (YYYY-MM-DD), string. A column whose values stop fitting its type is
widened (integer → float) or becomes a string. Numeric columns get min, max, sum and mean; date
columns get min and max. Empty cells are counted apart and never change the type.

Numbers a user would not sum are not numbers: nan and infinity, and integers or sums beyond a
float's range (about 1.8e308, an integer of 309 digits or more) make the column a string column,
so that the mean (and any JSON reader of the summary) gets a finite float.
"""

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EMPTY, INTEGER, FLOAT, BOOLEAN, DATE, STRING = (
    "empty",
    "integer",
    "float",
    "boolean",
    "date",
    "string",
)
_TRUE = {"true", "yes"}
_BOOLEANS = _TRUE | {"false", "no"}
_FLOAT_MAX = sys.float_info.max


def _json_ints(joined: str) -> list[Any] | None:
    """Plain integers parsed by the C JSON decoder in one call (2-3x faster than int()).

    Only digits and minus signs go in, so whatever JSON accepts is a list of ints.
    """
    text = joined.replace("\x00", ",")
    if not text.isascii() or not text.replace(",", "").replace("-", "").isdecimal():
        return None
    try:
        numbers: list[Any] = json.loads(f"[{text}]")
    except ValueError:
        return None
    return numbers


def _parse(
    kind: type[int] | type[float], values: Sequence[str], joined: str
) -> tuple[list[Any], Any] | None:
    """The values as numbers and their sum, or None if one is not a (finite) number."""
    numbers = _json_ints(joined) if kind is int else None
    if numbers is None or len(numbers) != len(values):
        try:
            numbers = list(map(kind, values))
        except ValueError:
            return None
    total = sum(numbers)
    if kind is float and not math.isfinite(total):
        return None  # nan or inf: not numbers a user would sum
    return numbers, total


def _has_empty(cells: Sequence[str], joined: str) -> bool:
    """Whether any cell is "", from scans of the joined cells (exact unless a cell holds NUL)."""
    if len(cells) <= 1 or joined.count("\x00") != len(cells) - 1:
        return "" in cells
    return joined[0] == "\x00" or joined[-1] == "\x00" or "\x00\x00" in joined


def _all_dates(values: Sequence[str], joined: str) -> bool:
    """Every value is YYYY-MM-DD with a plausible month and day, checked by string slicing."""
    n = len(values)
    if len(joined) != 11 * n - 1 or joined[4::11] != "-" * n or joined[7::11] != "-" * n:
        return False
    if joined[10::11] != "\x00" * (n - 1):
        return False
    digits = joined.replace("-", "").replace("\x00", "")
    if not (digits.isascii() and digits.isdigit()):
        return False
    data = joined.encode("ascii")
    return _two_digits_within(data, 5, n, 1, 12) and _two_digits_within(data, 8, n, 1, 31)


_DIGIT_VALUES = bytes.maketrans(b"0123456789", bytes(range(10)))


def _two_digits_within(data: bytes, start: int, n: int, low: int, high: int) -> bool:
    """Whether the two digits at `start` of each 11-byte date are all within [low, high].

    The n numbers are checked at once as the bytes of one big int: each byte holds a number
    below 100, so adding an offset sets its top bit exactly when the number passes a bound,
    without carrying into the next byte.
    """
    tens = int.from_bytes(data[start::11].translate(_DIGIT_VALUES), "big")
    ones = int.from_bytes(data[start + 1 :: 11].translate(_DIGIT_VALUES), "big")
    numbers = 10 * tens + ones
    unit = int.from_bytes(b"\x01" * n, "big")
    top = unit << 7
    at_least_low = (numbers + (128 - low) * unit) & top == top
    above_high = (numbers + (127 - high) * unit) & top
    return at_least_low and not above_high


@dataclass
class ColumnSummary:
    name: str
    source_name: str
    kind: str = EMPTY
    count: int = 0
    empty: int = 0
    total: int | float = 0
    minimum: Any = None
    maximum: Any = None
    true_count: int = 0

    def update(self, cells: Sequence[str], joined: str | None = None) -> None:
        """Add a batch of cells; `joined` is "\\x00".join(cells) if the caller has it."""
        if joined is None:
            joined = "\x00".join(cells)
        empty = cells.count("") if _has_empty(cells, joined) else 0
        self.empty += empty
        self.count += len(cells) - empty
        if self.kind == STRING or empty == len(cells):
            return
        if empty:
            cells = list(filter(None, cells))
            joined = "\x00".join(cells)
        self._infer(cells, joined)

    def _infer(self, values: Sequence[str], joined: str) -> None:
        kind = self.kind
        if kind in (EMPTY, INTEGER):
            parsed = _parse(int, values, joined)
            if parsed is not None:
                self._numbers(*parsed, INTEGER)
                return
        if kind in (EMPTY, INTEGER, FLOAT):
            parsed = _parse(float, values, joined)
            if parsed is not None:
                self._numbers(*parsed, FLOAT)
                return
        if kind in (EMPTY, BOOLEAN):
            distinct = set(values)
            lowered = {v.lower() for v in distinct} if len(distinct) <= 16 else set()
            if lowered and lowered <= _BOOLEANS:
                self.kind = BOOLEAN
                self.true_count += sum(values.count(v) for v in distinct if v.lower() in _TRUE)
                return
        if kind in (EMPTY, DATE) and _all_dates(values, joined):
            self.kind = DATE
            low, high = min(values), max(values)
            self.minimum = low if self.minimum is None else min(self.minimum, low)
            self.maximum = high if self.maximum is None else max(self.maximum, high)
            return
        self._text()

    def _text(self) -> None:
        self.kind = STRING
        self.total, self.minimum, self.maximum, self.true_count = 0, None, None, 0

    def _numbers(self, numbers: list[Any], total: float, kind: str) -> None:
        low, high = min(numbers), max(numbers)
        total += self.total
        if not -_FLOAT_MAX <= total <= _FLOAT_MAX or -low > _FLOAT_MAX or high > _FLOAT_MAX:
            self._text()  # beyond a float: a mean would overflow
            return
        self.kind = kind
        self.total = total
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "source_name": self.source_name,
            "type": self.kind,
            "count": self.count,
            "empty": self.empty,
        }
        if self.kind in (INTEGER, FLOAT):
            data.update(
                min=self.minimum,
                max=self.maximum,
                sum=self.total,
                mean=self.total / self.count if self.count else None,
            )
        elif self.kind == DATE:
            data.update(min=self.minimum, max=self.maximum)
        elif self.kind == BOOLEAN:
            data.update(true=self.true_count, false=self.count - self.true_count)
        return data


class TableSummary:
    def __init__(self, names: list[str], source_names: list[str]) -> None:
        self.columns = [
            ColumnSummary(name, source) for name, source in zip(names, source_names, strict=True)
        ]

    def update(self, columns: Sequence[tuple[Sequence[str], str]]) -> None:
        """Add a batch of columns, each (cells, the cells joined by NUL)."""
        for summary, (cells, joined) in zip(self.columns, columns, strict=True):
            summary.update(cells, joined)

    def as_list(self) -> list[dict[str, Any]]:
        return [column.as_dict() for column in self.columns]
