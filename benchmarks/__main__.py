"""`python -m benchmarks [--quick] [--latency SPEC] [module ...]`: run the benchmark modules
and print one table; write it with every row as JSON and a plot into benchmarks/results/.

A benchmark module is any module of this package, not starting with `_`, that defines
`run() -> list[dict]`. A figure that could not be measured is a row "not measured" with the
reason (benchmarks._common.measured), and so is a module that fails to import or run; the
other figures still run and print. The exit status is then 1: the table is incomplete. A MISS
is a result, not a failure; a "skipped" row (a tool this machine lacks) is not a failure either.

`--quick` is a smoke run (fewer rounds, smaller files: about 2 minutes); `--latency SPEC`
sets the latency model's delays (`sqs=8,dynamodb=5,ses=40,s3=15` are the defaults; `off`
measures against moto only), as OFFLOAD_BENCH_LATENCY does.
"""

import argparse
import importlib
import json
import math
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks._common import ROOT, failure_reason, not_measured
from benchmarks._latency import ENV, configured, describe, parse_delays

RESULTS = ROOT / "benchmarks" / "results"

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
    if row.get("skipped"):
        return "skipped"
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
        else f"- {row['figure']}: skipped: {row['skipped']}"
        if row.get("skipped")
        else f"- {row['figure']}: {row['note']}"
        for row in rows
        if row.get("note") or row.get("not_measured") or row.get("skipped")
    ]
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def exit_status(rows: list[Row], errors: list[str]) -> int:
    """1 if any figure is missing from the table (a MISS is a result, and does not count)."""
    return 1 if errors or any(row.get("not_measured") for row in rows) else 0


def plot(rows: list[Row], path: Path) -> Path:
    """A bar per figure with a baseline: its ratio to the baseline, coloured by what AWS it ran
    against (moto, the latency model), on a log scale with 1x marked. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [
        r
        for r in rows
        if isinstance(r.get("ratio"), int | float)
        and not math.isinf(r["ratio"])
        and r["ratio"] > 0
        and r.get("unit") != "$"
    ]
    colours = {
        "latency model": "#1f77b4",
        "moto": "#ff7f0e",
        "moto in-process": "#ffbb78",
        "no model (moto or a local file)": "#7f7f7f",
    }
    height = 0.32 * len(drawn) + 1.2
    figure, axes = plt.subplots(figsize=(11, height))
    labels = [r["figure"] for r in reversed(drawn)]
    values = [r["ratio"] for r in reversed(drawn)]
    bar_colours = [colours.get(r.get("variant") or "", "#7f7f7f") for r in reversed(drawn)]
    axes.barh(labels, values, color=bar_colours)
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=0.8)
    for index, r in enumerate(reversed(drawn)):
        axes.annotate(
            f"{r['ratio']:.2f}{TIMES}", (r["ratio"], index), xytext=(3, -3),
            textcoords="offset points", fontsize=7,
        )  # fmt: skip
    axes.set_xlabel(
        f"Offload / baseline, log scale (1{TIMES}: the same)\n"
        "rec/s and MB/s: higher is better; times, counts and memory: lower is better"
    )
    axes.tick_params(axis="y", labelsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    axes.legend(handles, list(colours), fontsize=7, loc="lower right")
    axes.set_title("make bench: each figure against its baseline, same run", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def save(rows: list[Row], text: str, quick: bool) -> list[Path]:
    """benchmarks/results/bench[-quick].{json,md,svg}: the rows, the table and the plot."""
    stem = RESULTS / ("bench-quick" if quick else "bench")
    stem.parent.mkdir(parents=True, exist_ok=True)
    delays = configured()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "latency_model": describe(delays) if delays else "off",
        "cpus": os.cpu_count(),
        "quick": quick,
    }
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    md_path.write_text(text + "\n")
    written = [json_path, md_path]
    try:
        written.append(plot(rows, stem.with_suffix(".svg")))
    except Exception as exc:  # the table matters more than its picture
        print(f"no plot: {failure_reason(exc)}", file=sys.stderr)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run")
    parser.add_argument("--latency", help="sqs=8,dynamodb=5,ses=40,s3=15 (the defaults) or off")
    parser.add_argument("modules", nargs="*", help=f"default: {' '.join(module_names())}")
    options = parser.parse_args(argv)
    if options.quick:
        os.environ["OFFLOAD_BENCH_QUICK"] = "1"
    if options.latency is not None:
        if options.latency.strip().lower() != "off":
            parse_delays(options.latency)  # refuse a bad spec before anything runs
        os.environ[ENV] = options.latency
    delays = configured()
    print(f"latency model: {describe(delays) if delays else 'off'}", file=sys.stderr)
    started = time.monotonic()
    rows, errors = collect(options.modules or module_names())
    text = table(rows)
    print()
    print(text)
    written = save(rows, text, options.quick)
    paths = ", ".join(str(path.relative_to(ROOT)) for path in written)
    print(f"\n{time.monotonic() - started:.0f} s; wrote {paths}")
    for error in errors:
        print(f"\n{error}", file=sys.stderr)
    return exit_status(rows, errors)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
