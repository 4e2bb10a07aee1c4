"""Upload filenames become one safe S3 key segment: no traversal, controls or absurd lengths."""

import pytest
from pydantic import ValidationError

from example_app.uploads.models import MAX_FILENAME_CHARS, UploadCreate
from offload.object_keys import object_key


def accepted(filename: str) -> str:
    return UploadCreate(filename=filename, content_type="text/csv", size=10).filename


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\windows\\system.ini.csv", "system.ini.csv"),
        ("/abs/path/data.csv", "data.csv"),
        ("results/evil.csv", "evil.csv"),
        ("a\x00b\r\nc\x1b[31m.csv", "abc_31m.csv"),
        ("report\u202egnp.csv", "reportgnp.csv"),  # right-to-left override (a format char)
        ("  sales 2024 .csv ", "sales 2024 .csv"),
    ],
)
def test_unsafe_names_are_reduced_to_a_safe_last_segment(given: str, kept: str) -> None:
    name = accepted(given)

    assert name == kept
    assert "/" not in name and "\\" not in name and ".." not in name
    assert all(ch.isprintable() for ch in name)


def test_a_long_name_is_cut_and_keeps_its_suffix() -> None:
    name = accepted("x" * 900 + ".csv.gz")

    assert len(name) <= MAX_FILENAME_CHARS
    assert name.endswith(".csv.gz")


@pytest.mark.parametrize("given", ["..", "../", "\x00\x01", "/", "x" * 1025 + ".csv"])
def test_names_that_are_empty_once_cleaned_or_too_long_are_refused(given: str) -> None:
    with pytest.raises(ValidationError) as error:
        accepted(given)

    assert error.value.errors()[0]["loc"] == ("filename",)


def test_the_object_key_stays_under_the_upload_prefix() -> None:
    from uuid import uuid4

    upload_id = uuid4()
    key = object_key(upload_id, accepted("../../results/x.csv"))

    assert key == f"uploads/{upload_id}/x.csv"
