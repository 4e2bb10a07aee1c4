"""`python -m benchmarks [module ...]`: run every benchmark module and print one table.

A benchmark module is any module of this package, not starting with `_`, that defines
`run() -> list[dict]`. A figure that could not be measured is a row "not measured" with the
reason (benchmarks._common.measured), and so is a module that fails to import or run; the
other figures still run and print. The exit status is then 1: the table is incomplete. A MISS
is a result, not a failure.
"""

import importlib
import math
import pkgutil
import sys
import time
import traceback
from typing import Any

import benchmarks
from benchmarks._common import failure_reason, not_measured

Row = dict[str, Any]
TIMES = "\u00d7"  # the multiplication sign


def module_names() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if not info.ispkg and not info.name.startswith("_")
    )


def collect(names: list[str]) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    errors: list[str] = []
    for name in names:
        started = time.monotonic()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            run = getattr(module, "run", None)
            if run is None:
                continue
            print(f"running benchmarks.{name} ...", file=sys.stderr, flush=True)
            rows.extend(run())
        except Exception as exc:  # one module's failure must not hide the others' rows
            errors.append(f"benchmarks.{name} failed:\n{traceback.format_exc()}")
            rows.append(not_measured(f"benchmarks.{name}", failure_reason(exc)))
            continue
        print(f"  done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows, errors


def _number(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if unit == "ms" and value >= 1000:
        return f"{value / 1000:.2f} s"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def _target(target: Any) -> str:
    if isinstance(target, int | float):
        return f"≤ {target:g}{TIMES}"
    return "—" if target is None else str(target)


def _result(row: Row) -> str:
    if row.get("not_measured"):
        return "not measured"
    if "passed" in row:
        return "PASS" if row["passed"] else "MISS"
    ratio, target = row.get("ratio"), row.get("target")
    if isinstance(target, int | float) and isinstance(ratio, int | float):
        return "PASS" if ratio <= target else "MISS"
    return "info"


def _ratio(ratio: Any) -> str:
    if not isinstance(ratio, int | float) or math.isinf(ratio):
        return "—"
    return f"{ratio:,.0f}{TIMES}" if ratio >= 100 else f"{ratio:.2f}{TIMES}"


def table(rows: list[Row]) -> str:
    header = ["Figure", "Offload", "Baseline", "Ratio", "Target", "Result"]
    lines = [header]
    for row in rows:
        unit = str(row.get("unit", ""))
        lines.append(
            [
                str(row.get("figure", "?")),
                _number(row.get("value"), unit),
                _number(row.get("baseline"), unit),
                _ratio(row.get("ratio")),
                _target(row.get("target")),
                _result(row),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    out = [fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])]
    notes = [
        f"- {row['figure']}: not measured: {row['not_measured']}"
        if row.get("not_measured")
        else f"- {row['figure']}: {row['note']}"
        for row in rows
        if row.get("note") or row.get("not_measured")
    ]
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def exit_status(rows: list[Row], errors: list[str]) -> int:
    """1 if any figure is missing from the table (a MISS is a result, and does not count)."""
    return 1 if errors or any(row.get("not_measured") for row in rows) else 0


def main(argv: list[str]) -> int:
    names = argv or module_names()
    rows, errors = collect(names)
    print()
    print(table(rows))
    for error in errors:
        print(f"\n{error}", file=sys.stderr)
    return exit_status(rows, errors)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
