"""Streaming CSV cleaning: bytes in, batches of clean columns out, in bounded memory.

- Decoding: UTF-8 with or without a BOM (UTF-16 with a BOM too); otherwise the declared
  charset, otherwise the encoding detected on the first 64 KiB (charset-normalizer). Bytes that
  do not decode later on become U+FFFD and are counted, never a crash. Binary data is refused.
- Header names are normalised: lower case, runs of other characters become `_`, blanks become
  `column_N`, repeats get `_2`, `_3`...
- Cells are trimmed; blank rows and exact duplicates (after trimming) are dropped.
- Ragged rows are counted with their line number: a short row is padded, a long row whose extra
  cells are empty is trimmed, a long row with data in its extra cells is dropped (its values
  cannot be placed in a column).

Work is done per batch of rows, column by column, so the per-cell loops run in C. Batches are
small (at most 1,024 rows and about 1 MiB of text) so that each one's objects stay in the CPU
cache and memory is bounded by bytes, whatever the shape of the rows.

Limits that bound memory whatever the file (each makes the upload fail with the reason):
- a record (one line, or a quoted record over several lines) holds at most `max_record_chars`
  characters: lines are read with a length limit, and the characters since the last complete
  record are counted;
- the header has at most `max_columns` columns, and a row at most as many fields.

Cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR,
OWASP's list) are written with a `'` in front, unless the cell is a number (`-1.5`, `+8`). Only
the output changes: duplicates and the summary see the cells as they are in the file.

Duplicates are found with a set of 60-bit row fingerprints (Python's hash of the row's cleaned
CSV line, which quotes a cell only when it must, so a row has exactly one line): memory is
O(unique rows) at about 60 bytes each in CPython (a 32-byte int plus the set's slot).
`max_tracked_rows` caps it; past the cap, rows are still checked against the fingerprints
already held but not added, and the summary says so. Two different rows share a fingerprint
with a probability of about n²/2⁶¹ (4e-7 for a million rows).
"""

import codecs
import csv
import gzip
import io
import operator
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, islice, repeat
from typing import IO, Any, Protocol

from example_app.uploads.errors import (
    EmptyUploadError,
    InvalidUploadError,
    NotTextError,
    OutOfTimeError,
    RecordTooLargeError,
    TooManyColumnsError,
    UploadTooLargeError,
)

SAMPLE_BYTES = 64 * 1024
BATCH_ROWS = 1024
# A batch also ends once it holds this many characters: rows may be wide.
BATCH_CHARS = 1024 * 1024
MAX_RAGGED_EXAMPLES = 100
# Defaults of the record and column limits (pipeline.Limits).
MAX_RECORD_CHARS = 1024 * 1024
MAX_COLUMNS = 16_384  # as many as a spreadsheet holds (Excel, LibreOffice)
_MASK60 = (1 << 60) - 1
_REPLACE_HANDLER = "example_app.uploads.replace"
_replaced: ContextVar[list[int]] = ContextVar("offload_uploads_replaced")
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document (an Excel .xls workbook?)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "an executable"),
    (b"PAR1", "a Parquet file"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ", "an xz archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"SQLite format 3", "an SQLite database"),
)
_SPECIALS = (",", '"', "\n", "\r")  # what makes a cell need quotes
_ASCII_SPACES = (" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")
# A column of one batch: its cells, and the cells joined by NUL (for C-level scans).
Column = tuple[Sequence[str], str]
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_NORMALISE = re.compile(r"[^\w]+")
# Formula injection (OWASP): first characters a spreadsheet may read as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_IS_NUMBER = re.compile(_NUMBER)
# A cell (after the start or a NUL separator) that starts like a formula and is not a number.
_FIRST_FORMULA = re.compile(rf"(?=[=+\-@\t\r])(?!{_NUMBER}(?:\x00|\Z))")
_LATER_FORMULA = re.compile(rf"\x00(?=[=+\-@\t\r])(?!{_NUMBER}(?:\x00|\Z))")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _replace_and_count(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    counter = _replaced.get(None)
    if counter is not None:
        counter[0] += error.end - error.start
    return "\ufffd", error.end


codecs.register_error(_REPLACE_HANDLER, _replace_and_count)


@dataclass(frozen=True)
class Deadline:
    """When processing must stop (time.monotonic()) so that the function can still finish."""

    at: float
    started: float = field(default_factory=time.monotonic)

    def check(self, count: int, what: str) -> None:
        if time.monotonic() > self.at:
            elapsed = time.monotonic() - self.started
            raise OutOfTimeError(
                "the file is too large to process within the function's time: "
                f"{count:,} bytes {what} in {elapsed:.0f} s"
            )


class _ChainedReader(io.RawIOBase):
    """Bytes already read (a sample), then the rest of a stream; counts what passes, and
    checks the size limit and the deadline on every read (at most 1 MiB apart)."""

    def __init__(
        self,
        head: bytes,
        rest: Readable,
        limit: int | None,
        what: str,
        deadline: Deadline | None = None,
    ) -> None:
        self._head = memoryview(head)
        self._rest = rest
        self._limit = limit
        self._what = what
        self._deadline = deadline
        self.count = len(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._deadline is not None:
            done = "read" if self._what == "is" else "decompressed"
            self._deadline.check(self.count, done)
        data = self._rest.read(len(view))
        n = len(data)
        view[:n] = data
        self.count += n
        if self._limit is not None and self.count > self._limit:
            raise UploadTooLargeError(f"the file {self._what} more than {self._limit} bytes")
        return n


def _read_sample(stream: Readable, size: int) -> bytes:
    parts = []
    while size > 0:
        chunk = stream.read(size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


@dataclass
class Source:
    """How the bytes were read: compression, encoding, delimiter and decoding damage."""

    compressed: bool = False
    encoding: str = "utf-8"
    bom: bool = False
    delimiter: str = ","
    replaced_bytes: list[int] = field(default_factory=lambda: [0])
    reader: _ChainedReader | None = None
    expanded: _ChainedReader | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bytes": self.reader.count if self.reader else 0,
            "decompressed_bytes": self.expanded.count if self.expanded else None,
            "compressed": self.compressed,
            "encoding": self.encoding,
            "bom": self.bom,
            "delimiter": self.delimiter,
            "undecodable_bytes": self.replaced_bytes[0],
        }


def _looks_binary(sample: bytes) -> None:
    for magic, kind in _MAGIC:
        if sample.startswith(magic):
            raise NotTextError(f"the file is {kind}, not CSV text")


def choose_encoding(sample: bytes, declared: str | None, final: bool) -> tuple[str, bool]:
    """The encoding to read with, and whether the sample starts with a BOM."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", True
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32", True
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=final)
        if b"\x00" not in sample:
            return "utf-8", False
    except UnicodeDecodeError:
        pass
    if declared:
        try:
            name = codecs.lookup(declared).name
            sample.decode(name)
            return name, False
        except (LookupError, UnicodeDecodeError):
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise NotTextError("the file is not text: no character encoding fits its bytes")
    return codecs.lookup(best.encoding).name, False


def _check_text(text: str) -> None:
    controls = len(_CONTROL.findall(text))
    if "\x00" in text or controls > max(2, len(text) // 200):
        raise NotTextError("the file is not text: it holds binary control bytes")


def open_text(
    stream: Readable,
    *,
    declared_charset: str | None = None,
    max_bytes: int | None = None,
    max_expanded_bytes: int | None = None,
    deadline: Deadline | None = None,
) -> tuple[IO[str], Source]:
    """Wrap a byte stream (gzip or not) as text, choosing the encoding from its start."""
    source = Source()
    head = _read_sample(stream, SAMPLE_BYTES)
    if not head:
        raise EmptyUploadError("the file is empty (0 bytes)")
    source.reader = _ChainedReader(head, stream, max_bytes, "is", deadline)
    raw: IO[bytes] = io.BufferedReader(source.reader, buffer_size=1 << 20)
    if head.startswith(b"\x1f\x8b"):
        source.compressed = True
        unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
        try:
            sample = _read_sample(unzipped, SAMPLE_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise NotTextError(f"the file is not a valid gzip stream: {exc}") from exc
        if not sample:
            raise EmptyUploadError("the file is empty once decompressed")
        source.expanded = _ChainedReader(
            sample, unzipped, max_expanded_bytes, "expands to", deadline
        )
        raw = io.BufferedReader(source.expanded, buffer_size=1 << 20)
    else:
        sample = head
    _looks_binary(sample)
    final = len(sample) < SAMPLE_BYTES
    source.encoding, source.bom = choose_encoding(sample, declared_charset, final)
    decoder = codecs.getincrementaldecoder(source.encoding)(errors=_REPLACE_HANDLER)
    _check_text(decoder.decode(sample, final=final))
    text = io.TextIOWrapper(raw, encoding=source.encoding, errors=_REPLACE_HANDLER, newline="")
    text._CHUNK_SIZE = 1 << 16  # type: ignore[attr-defined]
    return text, source


def normalise_headers(names: list[str]) -> list[str]:
    """`" Order ID"`, `"order-id"` → `order_id`; blanks → `column_N`; repeats → `_2`, `_3`."""
    result: list[str] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(names, start=1):
        name = _NORMALISE.sub("_", raw.strip().lower()).strip("_") or f"column_{index}"
        base, n = name, seen.get(name, 0)
        while name in seen:
            n += 1
            name = f"{base}_{n + 1}"
        seen[base] = n
        seen.setdefault(name, 0)
        result.append(name)
    return result


def sniff_delimiter(line: str, default: str) -> str:
    """Keep the declared delimiter unless the header line clearly uses another one."""
    counts = {d: line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts.get(default, 0) else default


@dataclass
class RowStats:
    read: int = 0
    written: int = 0
    blank: int = 0
    duplicate: int = 0
    ragged: int = 0
    padded: int = 0
    trimmed: int = 0
    dropped: int = 0
    ragged_examples: list[dict[str, Any]] = field(default_factory=list)
    tracked: int = 0
    max_tracked: int = 0
    untracked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "written": self.written,
            "blank": self.blank,
            "duplicate": self.duplicate,
            "ragged": {
                "count": self.ragged,
                "padded": self.padded,
                "trimmed": self.trimmed,
                "dropped": self.dropped,
                "rows": self.ragged_examples,
                "rows_truncated": self.ragged > len(self.ragged_examples),
            },
            "duplicate_check": {
                "complete": self.untracked == 0,
                "tracked_rows": self.tracked,
                "max_tracked_rows": self.max_tracked,
            },
        }


def _newlines(cells: list[str]) -> int:
    text = "\x00".join(cells)
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class RecordLines:
    """The text's lines for the CSV reader, never more than `max_record_chars` per record.

    A line is read with readline(limit), so that one line never holds more; a quoted record
    over several lines is counted from its first line until the reader yields it (then the
    Cleaner marks the record done), so that no record holds more, however it is quoted.
    """

    def __init__(self, text: IO[str], max_record_chars: int) -> None:
        self.max_record_chars = max_record_chars
        self.chars = 0  # characters read so far
        self.lines = 0  # lines read so far
        self.record_chars = 0  # `chars` when the current record started
        self.record_line = 1  # the line it started on
        self._readline = partial(text.readline, max_record_chars + 1)

    def __iter__(self) -> Iterator[str]:
        readline = self._readline
        limit = self.max_record_chars
        chars, lines = self.chars, self.lines
        while line := readline():
            lines += 1
            chars += len(line)
            self.chars, self.lines = chars, lines
            if chars - self.record_chars > limit:
                raise RecordTooLargeError(
                    f"a record starting at line {self.record_line} is longer than {limit} "
                    "characters, the limit (an unclosed quote?)"
                )
            yield line

    def record_done(self) -> None:
        self.record_chars = self.chars
        self.record_line = self.lines + 1


class Cleaner:
    """Reads rows from a csv reader and yields batches of clean columns."""

    def __init__(
        self,
        lines: Iterable[str],
        records: RecordLines,
        delimiter: str,
        max_tracked_rows: int,
        max_columns: int = MAX_COLUMNS,
    ) -> None:
        csv.field_size_limit(records.max_record_chars)
        self.reader = csv.reader(lines, delimiter=delimiter, strict=False)
        self.records = records
        self.max_columns = max_columns
        self.stats = RowStats(max_tracked=max_tracked_rows)
        self._seen: set[int] = set()
        self.header: list[str] = []
        self.source_header: list[str] = []

    def read_header(self) -> list[str]:
        for row in self._rows():
            if any(cell.strip() for cell in row):
                if len(row) > self.max_columns:
                    raise TooManyColumnsError(
                        f"the header has {len(row)} columns; the limit is {self.max_columns}"
                    )
                self.source_header = [cell.strip() for cell in row]
                self.header = normalise_headers(row)
                return self.header
        raise EmptyUploadError("the file has no rows: it is blank")

    def _rows(self, max_chars: int | None = None) -> Iterator[list[str]]:
        """The reader's rows, each marking its record done; stops after `max_chars`."""
        records = self.records
        end = records.chars + max_chars if max_chars is not None else None
        try:
            for row in self.reader:
                records.record_chars = records.chars  # records.record_done(), inlined
                records.record_line = records.lines + 1
                yield row
                if end is not None and records.chars >= end:
                    return
        except csv.Error as exc:
            raise InvalidUploadError(
                f"unreadable CSV near line {self.reader.line_num}: {exc} (an unclosed quote?)"
            ) from exc

    def batches(self) -> Iterator[tuple[list[Column], str]]:
        """Batches of clean rows: (columns for the summary, the rows as comma-separated text)."""
        width = len(self.header)
        blank_line = "," * (width - 1)
        reader = self.reader
        stats = self.stats
        while True:
            first_line = reader.line_num
            rows = list(islice(self._rows(BATCH_CHARS), BATCH_ROWS))
            if not rows:
                return
            stats.read += len(rows)
            try:
                transposed = list(zip(*rows, strict=True))
            except ValueError:
                transposed = []
            if len(transposed) != width:
                rows = self._fix_ragged(rows, width, first_line)
                if not rows:
                    continue
                transposed = list(zip(*rows, strict=True))
            columns = _clean_columns(rows, transposed)
            lines = list(map(",".join, rows))
            keep = self._keep(lines, blank_line)
            if _neutralise_formulas(rows, columns):
                lines = list(map(",".join, rows))
            if keep is not None:
                columns = [trim_column(list(compress(cells, keep))) for cells, _ in columns]
                lines = list(compress(lines, keep))
            if lines:
                stats.written += len(lines)
                lines.append("")
                yield columns, "\n".join(lines)

    def _fix_ragged(self, rows: list[list[str]], width: int, line: int) -> list[list[str]]:
        fixed: list[list[str]] = []
        stats = self.stats
        for row in rows:
            start = line + 1
            line += 1 + _newlines(row)
            if len(row) == width:
                fixed.append(row)
                continue
            if len(row) > self.max_columns:
                raise TooManyColumnsError(
                    f"line {start} has {len(row)} fields; the limit is {self.max_columns}"
                )
            if not "".join(row).strip():
                stats.blank += 1
                continue
            stats.ragged += 1
            if len(row) < width:
                action = "padded"
                stats.padded += 1
                fixed.append(row + [""] * (width - len(row)))
            elif not "".join(row[width:]).strip():
                action = "trimmed"
                stats.trimmed += 1
                fixed.append(row[:width])
            else:
                action = "dropped"
                stats.dropped += 1
            if len(stats.ragged_examples) < MAX_RAGGED_EXAMPLES:
                stats.ragged_examples.append(
                    {"line": start, "fields": len(row), "expected": width, "action": action}
                )
        return fixed

    def _keep(self, lines: list[str], blank_line: str) -> list[bool] | None:
        """Which rows to keep (None: all of them): not blank, not seen before.

        The encoded line stands for the row: the CSV encoding is one-to-one.
        """
        hashes = list(map(_MASK60.__and__, map(hash, lines)))
        seen = self._seen
        stats = self.stats
        n = len(hashes)
        if blank_line not in lines and seen.isdisjoint(hashes):
            if stats.tracked + n <= stats.max_tracked:
                before = len(seen)
                seen.update(hashes)
                if len(seen) - before == n:
                    stats.tracked += n
                    return None
                seen.difference_update(hashes)  # a row repeats within the batch
            elif stats.tracked >= stats.max_tracked:
                stats.untracked += n
                return None
        keep = []
        for line, h in zip(lines, hashes, strict=True):
            if line == blank_line:
                stats.blank += 1
                keep.append(False)
            elif h in seen:
                stats.duplicate += 1
                keep.append(False)
            else:
                keep.append(True)
                if stats.tracked < stats.max_tracked:
                    seen.add(h)
                    stats.tracked += 1
                else:
                    stats.untracked += 1
        return keep


def trim_column(cells: Sequence[str]) -> Column:
    """A column's cells without surrounding whitespace, and the cells joined by NUL.

    The joined string lets the checks below run as a few C-level scans per column instead of
    a Python call per cell: cells are only stripped when some whitespace touches a cell edge.
    """
    joined = "\x00".join(cells)
    if not joined.isascii():
        needs = True
    else:
        present = [w for w in _ASCII_SPACES if w in joined]
        needs = bool(present) and (
            joined[:1].isspace()
            or joined[-1:].isspace()
            or any(w + "\x00" in joined or "\x00" + w in joined for w in present)
        )
    if needs:
        cells = list(map(str.strip, cells))
        joined = "\x00".join(cells)
    return cells, joined


def _clean_columns(rows: list[list[str]], transposed: list[tuple[str, ...]]) -> list[Column]:
    """The batch's trimmed columns; `rows` are edited in place to hold their CSV-encoded cells.

    Only the columns that need trimming or quoting are written back into the rows, so the
    common batch costs one transposition and a few C-level scans per column.
    """
    columns: list[Column] = []
    for index, cells in enumerate(transposed):
        column = trim_column(cells)
        if column[0] is not cells:
            _set_column(rows, index, column[0])
        present = [s for s in _SPECIALS if s in column[1]]
        if present:
            _set_column(rows, index, _quote_cells(column, present))
        columns.append(column)
    return columns


def _neutralise_formulas(rows: list[list[str]], columns: list[Column]) -> bool:
    """Put a `'` before each cell of `rows` that a spreadsheet would run as a formula.

    `columns` hold the cells as read (trimmed); `rows` their CSV encoding, edited in place.
    A few C-level scans per column find the columns that need it; a column of numbers with
    signs (`-1.5`, `+8`) is found clean by one regular expression, without a loop per cell.
    Returns whether a cell changed.
    """
    changed = False
    for index, (cells, joined) in enumerate(columns):
        present = [c for c in _FORMULA_STARTS if c in joined]  # one memchr scan each
        if not present or (
            joined[:1] not in present and not any("\x00" + c in joined for c in present)
        ):
            continue
        exact = joined.count("\x00") == len(cells) - 1  # no cell holds a NUL of its own
        if exact and not (_FIRST_FORMULA.match(joined) or _LATER_FORMULA.search(joined)):
            continue
        encoded = [row[index] for row in rows]
        neutral = [
            _neutralised(value, cell) if value[:1] in _FORMULA_STARTS else cell
            for value, cell in zip(cells, encoded, strict=True)
        ]
        if neutral != encoded:
            _set_column(rows, index, neutral)
            changed = True
    return changed


def _neutralised(value: str, encoded: str) -> str:
    """The encoded cell with a `'` in front (inside its quotes), unless the value is a number."""
    if _IS_NUMBER.fullmatch(value):
        return encoded
    return "\"'" + encoded[1:] if encoded[:1] == '"' else "'" + encoded


def _set_column(rows: list[list[str]], index: int, values: Sequence[str]) -> None:
    for row, value in zip(rows, values, strict=True):
        row[index] = value


def encode_rows(columns: Sequence[Column]) -> list[str]:
    """Each row as one CSV line (no line end), quoting only the cells that need it."""
    out: list[Sequence[str]] = []
    for column in columns:
        present = [s for s in _SPECIALS if s in column[1]]
        out.append(_quote_cells(column, present) if present else column[0])
    return list(map(",".join, zip(*out, strict=True)))


def _quote_cells(column: Column, present: list[str]) -> list[str]:
    """The cells CSV-encoded: quoted when they hold one of `present` (the column's specials).

    The encoding is one-to-one, so the encoded row can stand for the row when duplicates are
    found. A column where every cell needs quotes is quoted in one pass over the joined cells.
    """
    cells, joined = column
    needs = list(map(operator.contains, cells, repeat(present[0])))
    for special in present[1:]:
        needs = list(map(operator.or_, needs, map(operator.contains, cells, repeat(special))))
    if all(needs) and joined.count("\x00") == len(cells) - 1:
        return ('"' + joined.replace('"', '""').replace("\x00", '"\x00"') + '"').split("\x00")
    return [_quoted(v) if need else v for v, need in zip(cells, needs, strict=True)]


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def read_errors() -> tuple[type[BaseException], ...]:
    """Errors a broken compressed stream raises while it is read."""
    return (gzip.BadGzipFile, EOFError, zlib.error)


def replaced_counter(source: Source) -> Any:
    """Count undecodable bytes into `source` while the returned token is set."""
    return _replaced.set(source.replaced_bytes)


def reset_counter(token: Any) -> None:
    _replaced.reset(token)
