"""Process one uploaded file: a byte stream in, cleaned CSV chunks out to a sink, a summary back.

Memory stays flat whatever the file size or shape: the source is read in 1 MiB blocks, rows are
handled in batches of at most 1,024 rows and about 1 MiB of text, one record holds at most
`Limits.max_record_chars` characters and `Limits.max_columns` fields, and cleaned CSV is handed
to the sink batch by batch. The one thing that grows is the duplicate-row fingerprint set,
capped by `Limits.max_tracked_rows`. Time is bounded too: given a deadline, the pipeline stops
with OutOfTimeError (the upload fails) rather than run into the function's timeout.
"""

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

from example_app.uploads import csvclean
from example_app.uploads.errors import NotTextError
from example_app.uploads.models import delimiter_for, split_content_type
from example_app.uploads.summary import TableSummary

HEADER_SEARCH_LINES = 1000


class Sink(Protocol):
    def write(self, data: bytes, /) -> Any: ...


@dataclass(frozen=True)
class Limits:
    max_bytes: int | None = None
    max_expanded_bytes: int | None = None
    max_tracked_rows: int = 1_000_000
    max_record_chars: int = csvclean.MAX_RECORD_CHARS
    max_columns: int = csvclean.MAX_COLUMNS


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The loop allocates many short-lived lists and makes no cycles: collecting is waste."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def process(
    stream: csvclean.Readable,
    sink: Sink,
    *,
    filename: str = "upload.csv",
    content_type: str | None = None,
    limits: Limits | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Clean the CSV/TSV (optionally gzip) in `stream`, write it to `sink`, return the summary.

    `deadline` (a time.monotonic() value) is when processing must have stopped.

    Raises an InvalidUploadError subclass, with a reason for the user, for a file that can
    never be processed: empty, not text, over the limits (sizes, record, columns, time), or
    not parseable as CSV.
    """
    limits = limits or Limits()
    started = time.perf_counter()
    charset = split_content_type(content_type or "")[1]
    text, source = csvclean.open_text(
        stream,
        declared_charset=charset,
        max_bytes=limits.max_bytes,
        max_expanded_bytes=limits.max_expanded_bytes,
        deadline=csvclean.Deadline(deadline) if deadline is not None else None,
    )
    token = csvclean.replaced_counter(source)
    try:
        records = csvclean.RecordLines(text, limits.max_record_chars)
        lines = iter(records)
        head: list[str] = []
        for line in lines:
            if line.strip():
                head.append(line)
                break
            head.append("\n")  # a blank line: kept for the line numbers, not its characters
            records.record_done()
            if len(head) >= HEADER_SEARCH_LINES:
                break
        declared = delimiter_for(filename, content_type)
        source.delimiter = csvclean.sniff_delimiter(head[-1] if head else "", declared)
        cleaner = csvclean.Cleaner(
            chain(head, lines),
            records,
            source.delimiter,
            limits.max_tracked_rows,
            limits.max_columns,
        )
        header = cleaner.read_header()
        table = TableSummary(header, cleaner.source_header)
        header_line = csvclean.encode_rows([csvclean.trim_column([name]) for name in header])[0]
        sink.write(f"{header_line}\n".encode())
        with _gc_paused():
            for columns, rows in cleaner.batches():
                table.update(columns)
                sink.write(rows.encode())
    except csvclean.read_errors() as exc:
        raise NotTextError(f"the file is not a valid gzip stream: {exc}") from exc
    finally:
        csvclean.reset_counter(token)
    return {
        "source": source.as_dict(),
        "rows": cleaner.stats.as_dict(),
        "columns": table.as_list(),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
