"""Process one uploaded file: a byte stream in, cleaned CSV chunks out to a sink, a summary back.

Memory stays flat whatever the file size: the source is read in 1 MiB blocks, rows are handled
in batches of about a thousand, and cleaned CSV is handed to the sink batch by batch. The one thing
that grows is the duplicate-row fingerprint set, capped by `Limits.max_tracked_rows`.
"""

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import IO, Any, Protocol

from offload.uploads import csvclean
from offload.uploads.errors import NotTextError
from offload.uploads.models import delimiter_for, split_content_type
from offload.uploads.summary import TableSummary

# Longest line handed to the CSV parser at once: bounds memory on a file with no line breaks.
MAX_LINE_CHARS = 4 * 1024 * 1024
HEADER_SEARCH_LINES = 1000


class Sink(Protocol):
    def write(self, data: bytes, /) -> Any: ...


@dataclass(frozen=True)
class Limits:
    max_bytes: int | None = None
    max_expanded_bytes: int | None = None
    max_tracked_rows: int = 1_000_000


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


def _lines(text: IO[str]) -> Iterator[str]:
    return iter(partial(text.readline, MAX_LINE_CHARS), "")


def process(
    stream: csvclean.Readable,
    sink: Sink,
    *,
    filename: str = "upload.csv",
    content_type: str | None = None,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """Clean the CSV/TSV (optionally gzip) in `stream`, write it to `sink`, return the summary.

    Raises an InvalidUploadError subclass, with a reason for the user, for a file that can
    never be processed: empty, not text, over the limits, or not parseable as CSV.
    """
    limits = limits or Limits()
    started = time.perf_counter()
    charset = split_content_type(content_type or "")[1]
    text, source = csvclean.open_text(
        stream,
        declared_charset=charset,
        max_bytes=limits.max_bytes,
        max_expanded_bytes=limits.max_expanded_bytes,
    )
    token = csvclean.replaced_counter(source)
    try:
        lines = _lines(text)
        head: list[str] = []
        for line in lines:
            head.append(line)
            if line.strip() or len(head) >= HEADER_SEARCH_LINES:
                break
        declared = delimiter_for(filename, content_type)
        source.delimiter = csvclean.sniff_delimiter(head[-1] if head else "", declared)
        cleaner = csvclean.Cleaner(chain(head, lines), source.delimiter, limits.max_tracked_rows)
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
