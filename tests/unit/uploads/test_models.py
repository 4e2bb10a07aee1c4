"""The upload request's validation, file names, keys, and S3 notification parsing."""

from uuid import UUID

import pytest
from pydantic import ValidationError

from example_app.settings import get_settings
from example_app.uploads.models import UploadCreate, sanitise_filename
from offload.object_keys import parse_object_key
from offload.worker.sources import ObjectCreated, s3_records

UPLOAD_ID = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sales.csv", "sales.csv"),
        ("../../etc/passwd.csv", "passwd.csv"),
        ("C:\\Users\\ann\\Q1 report.tsv", "Q1 report.tsv"),
        ("evil\x00\x1b[31mname\r\n.csv", "evil_31mname.csv"),
        ("  résumé  2024 .csv.gz", "résumé 2024 .csv.gz"),
        ("a/b/..", ""),
        ("x" * 500 + ".csv.gz", "x" * 193 + ".csv.gz"),
    ],
)
def test_sanitise_filename(given: str, expected: str) -> None:
    assert sanitise_filename(given) == expected


def test_upload_create_accepts_csv_tsv_and_gzip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_UPLOAD_MAX_BYTES", "1000")
    get_settings.cache_clear()
    try:
        made = UploadCreate(filename="../a b.csv.gz", content_type="application/gzip", size=1000)
        assert made.filename == "a b.csv.gz"
        made = UploadCreate(filename="x.tsv", content_type="Text/CSV; Charset=windows-1252", size=1)
        assert made.content_type == "text/csv; charset=windows-1252"
        for bad in (
            {"filename": "x.xlsx", "content_type": "text/csv", "size": 1},
            {"filename": "x.csv", "content_type": "application/pdf", "size": 1},
            {"filename": "x.csv", "content_type": "text/csv; charset=klingon", "size": 1},
            {"filename": "x.csv", "content_type": "text/csv", "size": 0},
            {"filename": "x.csv", "content_type": "text/csv", "size": 1001},
            {"filename": "../..", "content_type": "text/csv", "size": 1},
        ):
            with pytest.raises(ValidationError):
                UploadCreate.model_validate(bad)
    finally:
        get_settings.cache_clear()


def test_parse_object_key() -> None:
    assert parse_object_key(f"uploads/{UPLOAD_ID}/a b.csv") == (UPLOAD_ID, "a b.csv")
    assert parse_object_key(f"uploads/{UPLOAD_ID}/x/y.csv") is None
    assert parse_object_key("uploads/not-a-uuid/a.csv") is None
    assert parse_object_key(f"results/{UPLOAD_ID}/cleaned.csv") is None


def test_s3_records_decode_every_key() -> None:
    # moto (and some S3 paths) encode "/" as %2F; "+" is a space, %2B a plus sign
    notification = {
        "Records": [
            {
                "eventName": "ObjectCreated:Post",
                "s3": {
                    "bucket": {"name": "b"},
                    "object": {
                        "key": f"uploads%2F{UPLOAD_ID}%2FQ1+r%C3%A9sum%C3%A9+%2B.csv",
                        "size": 5,
                    },
                },
            },
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "uploads/x/y.csv"}},
            },
        ]
    }
    assert s3_records(notification) == [
        ObjectCreated("b", f"uploads/{UPLOAD_ID}/Q1 résumé +.csv", 5, "ObjectCreated:Post"),
        ObjectCreated("b", "uploads/x/y.csv", None, "ObjectCreated:Put"),
    ]
    assert s3_records({"Service": "Amazon S3", "Event": "s3:TestEvent"}) == []
    with pytest.raises(ValueError, match="not an S3 notification"):
        s3_records({"hello": "world"})
