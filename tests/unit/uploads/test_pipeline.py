"""Cleaning and aggregation through the pipeline's entry point, on tricky files."""

import csv
import gzip
import io
import json
import time
from typing import Any

import pytest

from example_app.uploads.errors import (
    EmptyUploadError,
    InvalidUploadError,
    NotTextError,
    OutOfTimeError,
    RecordTooLargeError,
    TooManyColumnsError,
    UploadTooLargeError,
)
from example_app.uploads.pipeline import Limits, process


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8")

    @property
    def rows(self) -> list[list[str]]:
        return list(csv.reader(io.StringIO(self.text, newline="")))


def run(
    data: bytes,
    filename: str = "data.csv",
    content_type: str | None = None,
    deadline: float | None = None,
    **limits: Any,
) -> tuple[dict[str, Any], Sink]:
    sink = Sink()
    summary = process(
        io.BytesIO(data),
        sink,
        filename=filename,
        content_type=content_type,
        limits=Limits(**limits),
        deadline=deadline,
    )
    return summary, sink


def column(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in summary["columns"] if c["name"] == name)


def test_utf8_bom_and_crlf_are_handled() -> None:
    # Given an Excel-style export: a UTF-8 BOM and CRLF line ends
    data = "\ufeffName,Amount\r\nZoë,1.5\r\nÅsa,2\r\n".encode()
    # When it is processed
    summary, sink = run(data)
    # Then the BOM is gone from the header, and the output is plain UTF-8 with LF
    assert sink.rows == [["name", "amount"], ["Zoë", "1.5"], ["Åsa", "2"]]
    assert "\r" not in sink.text
    assert summary["source"]["encoding"] == "utf-8-sig"
    assert summary["source"]["bom"] is True
    assert column(summary, "amount") == {
        "name": "amount",
        "source_name": "Amount",
        "type": "float",
        "count": 2,
        "empty": 0,
        "min": 1.5,
        "max": 2.0,
        "sum": 3.5,
        "mean": 1.75,
    }


def test_quoted_newlines_delimiters_and_quotes_survive() -> None:
    data = b'id,note\n1,"line one\nline two"\n2,"has, comma and ""quotes"""\n3,plain\n'
    summary, sink = run(data)
    assert sink.rows == [
        ["id", "note"],
        ["1", "line one\nline two"],
        ["2", 'has, comma and "quotes"'],
        ["3", "plain"],
    ]
    assert summary["rows"]["written"] == 3


def test_ragged_rows_are_counted_with_their_line_numbers() -> None:
    # Given rows with too few and too many cells (line 3 spans two lines inside quotes)
    data = (
        b"a,b,c\n"
        b"1,2,3\n"
        b'"x\ny",2\n'  # lines 3-4: short → padded
        b"4,5,6,\n"  # line 5: an empty extra cell → trimmed
        b"7,8,9,10\n"  # line 6: data in the extra cell → dropped
        b"11,12,13\n"
    )
    summary, sink = run(data)
    assert sink.rows == [
        ["a", "b", "c"],
        ["1", "2", "3"],
        ["x\ny", "2", ""],
        ["4", "5", "6"],
        ["11", "12", "13"],
    ]
    ragged = summary["rows"]["ragged"]
    assert ragged["count"] == 3
    assert (ragged["padded"], ragged["trimmed"], ragged["dropped"]) == (1, 1, 1)
    assert ragged["rows"] == [
        {"line": 3, "fields": 2, "expected": 3, "action": "padded"},
        {"line": 5, "fields": 4, "expected": 3, "action": "trimmed"},
        {"line": 6, "fields": 4, "expected": 3, "action": "dropped"},
    ]


def test_blank_rows_and_exact_duplicates_are_dropped_after_trimming() -> None:
    data = b"\n\n id , name \n1,ann\n\n , \n 1 ,  ann \n2,bob\n1,ann\n2,Bob\n"
    summary, sink = run(data)
    assert sink.rows == [["id", "name"], ["1", "ann"], ["2", "bob"], ["2", "Bob"]]
    rows = summary["rows"]
    assert (rows["read"], rows["written"], rows["blank"], rows["duplicate"]) == (7, 3, 2, 2)
    assert rows["duplicate_check"]["complete"] is True


def test_duplicate_tracking_is_capped_and_says_so() -> None:
    data = b"n\n" + b"".join(f"{i}\n".encode() for i in range(10)) + b"0\n9\n"
    summary, _ = run(data, max_tracked_rows=5)
    rows = summary["rows"]
    # The first five rows are remembered: "0" is caught again, "9" is not.
    assert rows["duplicate"] == 1
    assert rows["written"] == 11
    assert rows["duplicate_check"] == {
        "complete": False,
        "tracked_rows": 5,
        "max_tracked_rows": 5,
    }


def test_headers_are_normalised_and_made_unique() -> None:
    summary, sink = run(" Order ID,order-id,,E-Mail Address ,Prénom\n1,2,3,4,5\n".encode())
    assert sink.rows[0] == ["order_id", "order_id_2", "column_3", "e_mail_address", "prénom"]
    assert column(summary, "e_mail_address")["source_name"] == "E-Mail Address"


def test_types_and_aggregates_per_column() -> None:
    data = (
        b"int,float,bool,date,text,mixed,blank\n"
        b"1,1.5,true,2024-01-31,a,1,\n"
        b"-3,2,No,2023-12-01,b,x,\n"
        b"10,,yes,2024-02-29,,2,\n"
    )
    summary, _ = run(data)
    assert column(summary, "int") | {} == {
        "name": "int",
        "source_name": "int",
        "type": "integer",
        "count": 3,
        "empty": 0,
        "min": -3,
        "max": 10,
        "sum": 8,
        "mean": 8 / 3,
    }
    assert column(summary, "float")["type"] == "float"
    assert (column(summary, "float")["count"], column(summary, "float")["empty"]) == (2, 1)
    assert column(summary, "float")["sum"] == 3.5
    assert column(summary, "bool") | {} == {
        "name": "bool",
        "source_name": "bool",
        "type": "boolean",
        "count": 3,
        "empty": 0,
        "true": 2,
        "false": 1,
    }
    assert column(summary, "date")["type"] == "date"
    assert (column(summary, "date")["min"], column(summary, "date")["max"]) == (
        "2023-12-01",
        "2024-02-29",
    )
    assert column(summary, "text")["type"] == "string"
    assert column(summary, "mixed")["type"] == "string"
    assert "sum" not in column(summary, "mixed")
    assert column(summary, "blank") == {
        "name": "blank",
        "source_name": "blank",
        "type": "empty",
        "count": 0,
        "empty": 3,
    }


def test_a_column_widens_from_integer_to_float_across_batches() -> None:
    rows = [f"{i}\n" for i in range(5000)] + ["0.5\n"]
    summary, _ = run(("x\n" + "".join(rows)).encode())
    x = column(summary, "x")
    assert x["type"] == "float"
    assert x["sum"] == sum(range(5000)) + 0.5
    assert (x["min"], x["max"]) == (0, 4999)


def test_nan_and_infinity_are_not_numbers() -> None:
    summary, _ = run(b"v\n1\nnan\ninf\n")
    assert column(summary, "v")["type"] == "string"


def test_latin1_without_bom_is_detected() -> None:
    text = "nom,ville\nRené,Besançon\nJosé,Göteborg\nFrançois,Orléans\n" * 20
    summary, sink = run(text.encode("cp1252"))
    assert sink.rows[1] == ["René", "Besançon"]
    assert summary["source"]["encoding"] != "utf-8"


def test_declared_charset_is_used_when_the_bytes_are_not_utf8() -> None:
    data = "name\nŁódź\nKraków\n".encode("cp1250")
    summary, sink = run(data, content_type="text/csv; charset=windows-1250")
    assert sink.rows[1:] == [["Łódź"], ["Kraków"]]
    assert summary["source"]["encoding"] == "cp1250"


def test_bytes_that_do_not_decode_later_on_are_replaced_and_counted() -> None:
    # Given a file that is UTF-8 at the start and has one stray latin-1 byte deep inside
    head = b"name\n" + b"plain ascii row\n" * 10_000
    summary, sink = run(head + b"caf\xe9\n")
    assert sink.rows[-1] == ["caf\ufffd"]
    assert summary["source"]["undecodable_bytes"] == 1


def test_utf16_with_bom() -> None:
    summary, sink = run("a\tb\n1\t2\n".encode("utf-16"), filename="x.tsv")
    assert sink.rows == [["a", "b"], ["1", "2"]]
    assert summary["source"]["delimiter"] == "\t"


def test_tsv_by_extension_and_semicolons_by_sniffing() -> None:
    _, tsv = run(b"a\tb\n1,5\t2\n", filename="data.tsv")
    assert tsv.rows == [["a", "b"], ["1,5", "2"]]
    summary, semi = run(b"a;b;c\n1;2;3\n", filename="data.csv")
    assert semi.rows == [["a", "b", "c"], ["1", "2", "3"]]
    assert summary["source"]["delimiter"] == ";"


def test_gzip_is_decompressed_while_streaming() -> None:
    raw = b"k,v\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(20_000))
    summary, _ = run(gzip.compress(raw), filename="data.csv.gz")
    assert summary["source"]["compressed"] is True
    assert summary["source"]["decompressed_bytes"] == len(raw)
    assert summary["rows"]["written"] == 20_000
    assert column(summary, "v")["sum"] == sum(i * 2 for i in range(20_000))


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"", EmptyUploadError, "empty"),
        (b"\n \r\n\t\n", EmptyUploadError, "blank"),
        (gzip.compress(b""), EmptyUploadError, "empty once decompressed"),
        (b"PK\x03\x04" + b"\x00" * 100, NotTextError, "ZIP archive"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, NotTextError, "PNG"),
        (bytes(range(256)) * 64, NotTextError, "not text"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate" * 10, NotTextError, "gzip"),
    ],
)
def test_files_that_can_never_succeed(data: bytes, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        run(data)


def test_truncated_gzip_is_not_text() -> None:
    data = gzip.compress(b"a,b\n" + b"1,2\n" * 100_000)
    with pytest.raises(NotTextError, match="gzip"):
        run(data[: len(data) // 2])


def test_over_the_size_limit_while_streaming() -> None:
    with pytest.raises(UploadTooLargeError, match="more than 100000 bytes"):
        run(b"a\n" + b"1\n" * 100_000, max_bytes=100_000)


def test_gzip_bomb_is_stopped_by_the_expanded_limit() -> None:
    data = gzip.compress(b"a\n" + b"1\n" * 1_000_000)
    with pytest.raises(UploadTooLargeError, match="expands to more than"):
        run(data, max_bytes=len(data), max_expanded_bytes=500_000)


def test_unclosed_quote_fails_clearly_instead_of_reading_everything() -> None:
    data = b'a,b\n1,"never closed\n' + b"x" * 2_000_000 + b"\n"
    with pytest.raises(InvalidUploadError, match="unclosed quote"):
        run(data)


def test_header_only_file_succeeds_with_no_rows() -> None:
    summary, sink = run(b"a,b\n")
    assert sink.rows == [["a", "b"]]
    assert summary["rows"]["written"] == 0


def test_integer_inference_edge_cases() -> None:
    # Leading zeros and signs are integers; a quoted "2,3" is not a number; true is not 1.
    summary, _ = run(b'a,b,c\n007,1,1\n+8,"2,3",true\n-1,4,2\n')
    a, b, c = (column(summary, n) for n in "abc")
    assert (a["type"], a["min"], a["max"], a["sum"]) == ("integer", -1, 8, 14)
    assert b["type"] == "string"
    assert c["type"] == "string"


def test_a_deeply_nested_cell_in_a_number_column_is_just_a_string() -> None:
    # Given a column of integers with one cell of 100,000 opening brackets (a crafted file)
    data = b"id\n1\n2\n" + b"[" * 100_000 + b"\n"

    # When it is processed, then it does not crash: the column is simply text
    summary, sink = run(data)

    assert column(summary, "id")["type"] == "string"
    assert len(sink.rows) == 4


def test_a_duplicate_far_from_its_first_row_is_found_however_its_neighbours_are_quoted() -> None:
    # Given a row repeated thousands of rows later, first next to a cell that needs quotes
    unique = "".join(f"{i},plain {i}\n" for i in range(3, 6000))
    data = f'k,v\n1,same\n2,"needs, quotes"\n{unique}1,same\n'.encode()
    # When it is processed
    summary, sink = run(data)
    # Then the repeat is dropped, and only the cell that needs quotes has them
    assert summary["rows"]["duplicate"] == 1
    assert sink.rows.count(["1", "same"]) == 1
    assert sink.text.startswith('k,v\n1,same\n2,"needs, quotes"\n3,plain 3\n')


@pytest.mark.parametrize(
    "late", ["2024-13-01", "2024-00-10", "2024-01-32", "2024-01-00", "2024-1-01"]
)
def test_an_implausible_date_late_in_the_file_makes_the_column_text(late: str) -> None:
    rows = "".join(f"{i},2024-{i % 12 + 1:02d}-{i % 31 + 1:02d}\n" for i in range(5000))
    summary, _ = run(f"i,d\n{rows}0,{late}\n".encode())
    assert column(summary, "d")["type"] == "string"


def test_dates_across_batches_keep_their_range() -> None:
    rows = "".join(f"{i},{1990 + i % 30}-{i % 12 + 1:02d}-{i % 31 + 1:02d}\n" for i in range(5000))
    summary, _ = run(f"i,d\n{rows}".encode())
    d = column(summary, "d")
    assert (d["type"], d["min"], d["max"], d["count"]) == ("date", "1990-01-01", "2019-12-31", 5000)


# ---------------------------------------------------------------- limits by bytes (issue 8)
def test_many_records_together_longer_than_the_record_limit_are_fine() -> None:
    # Given 3 MB of short records, some of them quoted over two lines, and a 100-character limit
    rows = "".join(f'{i},"two\nlines {i}"\n' for i in range(150_000))
    # When it is processed, then the limit counts one record at a time
    summary, sink = run(f"a,b\n{rows}".encode(), max_record_chars=100)
    assert summary["rows"]["written"] == 150_000
    assert sink.rows[1] == ["0", "two\nlines 0"]


def test_a_quoted_record_over_many_lines_stops_at_the_record_limit() -> None:
    data = b"a,b\n1,2\n3," + b'"x\n",' * 1_000 + b"\n"
    with pytest.raises(RecordTooLargeError, match="a record starting at line 3 is longer than"):
        run(data, max_record_chars=1_000)


def test_a_line_without_a_break_stops_at_the_record_limit() -> None:
    with pytest.raises(RecordTooLargeError, match="starting at line 1 is longer than 1000"):
        run(b"a," * 10_000, max_record_chars=1_000)


def test_a_record_just_within_the_limit_is_kept() -> None:
    cell = "x" * 990
    _, sink = run(f"a,b\n1,{cell}\n".encode(), max_record_chars=1_000)
    assert sink.rows[1] == ["1", cell]


def test_blank_lines_before_the_header_do_not_count_as_one_record() -> None:
    data = (" " * 900 + "\n") * 50 + "a,b\n1,2\n"
    _, sink = run(data.encode(), max_record_chars=1_000)
    assert sink.rows == [["a", "b"], ["1", "2"]]


def test_a_header_over_the_column_limit_fails_with_the_count() -> None:
    with pytest.raises(TooManyColumnsError, match="the header has 11 columns; the limit is 10"):
        run(b",".join([b"c"] * 11) + b"\n1\n", max_columns=10)


def test_a_row_over_the_column_limit_fails_with_its_line() -> None:
    data = b"a,b\n1,2\n" + b",".join([b"x"] * 11) + b"\n"
    with pytest.raises(TooManyColumnsError, match="line 3 has 11 fields; the limit is 10"):
        run(data, max_columns=10)


def test_a_row_longer_than_the_header_but_within_the_limit_is_still_just_ragged() -> None:
    summary, _ = run(b"a,b\n1,2,,,\n", max_columns=10)
    assert summary["rows"]["ragged"]["trimmed"] == 1


def test_a_passed_deadline_stops_reading_with_the_reason() -> None:
    data = gzip.compress(b"a\n" + b"1\n" * 2_000_000)
    with pytest.raises(OutOfTimeError, match="too large to process within the function's time"):
        run(data, deadline=time.monotonic() - 1)


def test_a_deadline_in_time_changes_nothing() -> None:
    summary, _ = run(b"a\n1\n", deadline=time.monotonic() + 60)
    assert summary["rows"]["written"] == 1


# ---------------------------------------------------------------- formula injection (issue 8)
def test_cells_that_start_like_a_formula_get_a_quote_in_front() -> None:
    data = b"a,b\n=1+2,@x\n\"=cmd|' /C calc'!A0, with a comma\",+x\n-,--1\nx=1,a-b\n"
    _, sink = run(data)
    assert sink.rows[1:] == [
        ["'=1+2", "'@x"],
        ["'=cmd|' /C calc'!A0, with a comma", "'+x"],
        ["'-", "'--1"],
        ["x=1", "a-b"],
    ]
    # The quote goes inside the CSV quotes
    assert "\"'=cmd|" in sink.text


@pytest.mark.parametrize("number", ["-1", "+8", "-1.5", "-.5", "+1e5", "-2E-3", "-0", "-1."])
def test_numbers_with_a_sign_are_left_alone(number: str) -> None:
    _, sink = run(f"a,b\n{number},=x\n1,2\n".encode())
    assert sink.rows[1] == [number, "'=x"]


def test_the_summary_and_duplicates_see_the_cells_as_read() -> None:
    summary, sink = run(b"a,b\n=x,-1\n'=x,-2\n=x,-1\n")
    assert summary["rows"]["duplicate"] == 1
    assert sink.rows[1:] == [["'=x", "-1"], ["'=x", "-2"]]
    assert (column(summary, "b")["type"], column(summary, "b")["min"]) == ("integer", -2)


def test_a_column_of_signed_numbers_across_batches_is_untouched() -> None:
    rows = "".join(f"{-i},{i}\n" for i in range(5000))
    _, sink = run(f"a,b\n{rows}".encode())
    assert sink.text == f"a,b\n{rows}"


# ---------------------------------------------------------------- numbers beyond a float
def test_integers_beyond_a_float_make_the_column_text() -> None:
    summary, sink = run(f"a,b,c\n{'9' * 309},1,{'1' * 5000}\n1,2,3\n".encode())
    assert column(summary, "a")["type"] == "string"
    assert column(summary, "b")["mean"] == 1.5
    assert column(summary, "c")["type"] == "string"
    assert sink.rows[1][0] == "9" * 309
    json.dumps(summary, allow_nan=False)


def test_a_float_sum_that_overflows_across_batches_makes_the_column_text() -> None:
    # Given one 1.5e308 per batch of rows (each batch's sum is a float; two of them are not)
    rows = "".join(f"{i},{'1.5e308' if i % 1024 == 0 else '0.5'}\n" for i in range(3000))
    summary, _ = run(f"i,a\n{rows}".encode())
    assert column(summary, "a")["type"] == "string"
    json.dumps(summary, allow_nan=False)


def test_a_large_integer_within_a_float_keeps_its_exact_sum() -> None:
    big = 10**300
    summary, _ = run(f"a\n{big}\n{big + 2}\n".encode())
    a = column(summary, "a")
    assert (a["type"], a["sum"], a["mean"]) == ("integer", 2 * big + 2, float(big + 1))
