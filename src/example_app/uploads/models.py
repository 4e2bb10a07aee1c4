"""The upload request: what POST /uploads accepts, and the names derived from it."""

import re
import unicodedata
from pathlib import PurePosixPath
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from example_app.settings import get_settings

UPLOAD_KIND = "process_upload"
RESULTS_PREFIX = "results/"
MAX_FILENAME_CHARS = 200
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": ","}
GZIP_SUFFIXES = {".gz", ".gzip"}
CSV_TYPES = {"text/csv", "application/csv", "text/x-csv", "application/vnd.ms-excel", "text/plain"}
TSV_TYPES = {"text/tab-separated-values", "text/tsv"}
GZIP_TYPES = {"application/gzip", "application/x-gzip"}
_UNSAFE = re.compile(r"[^\w .()+,@=-]+")
_SPACES = re.compile(r"\s+")


def sanitise_filename(name: str) -> str:
    """A safe last path segment: no directories, no control characters, a bounded length.

    Keeps letters (any script), digits, spaces and `._-()+,@=`; anything else becomes `_`.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if not unicodedata.category(c).startswith("C"))
    name = _SPACES.sub(" ", _UNSAFE.sub("_", name)).strip(" .")
    if len(name) > MAX_FILENAME_CHARS:
        path = PurePosixPath(name)
        suffixes = "".join(path.suffixes[-2:])[:20]
        name = name[: MAX_FILENAME_CHARS - len(suffixes)].rstrip(" .") + suffixes
    return name


def split_content_type(value: str) -> tuple[str, str | None]:
    """`text/csv; charset=windows-1252` → ("text/csv", "windows-1252")."""
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip('"')
    return media.strip().lower(), charset


def delimiter_for(filename: str, content_type: str | None = None) -> str:
    """The delimiter the name or the content type declares (the cleaner may refine it)."""
    suffixes = [s.lower() for s in PurePosixPath(filename).suffixes]
    if suffixes and suffixes[-1] in GZIP_SUFFIXES:
        suffixes.pop()
    if suffixes and suffixes[-1] in TEXT_SUFFIXES:
        return TEXT_SUFFIXES[suffixes[-1]]
    media = split_content_type(content_type or "")[0]
    return "\t" if media in TSV_TYPES else ","


def result_keys(upload_id: UUID) -> dict[str, str]:
    return {
        "cleaned_csv": f"{RESULTS_PREFIX}{upload_id}/cleaned.csv",
        "summary_json": f"{RESULTS_PREFIX}{upload_id}/summary.json",
    }


class UploadCreate(BaseModel):
    """POST /uploads: the file the client is about to upload."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    filename: Annotated[str, Field(min_length=1, max_length=1024, examples=["sales 2024.csv"])]
    content_type: Annotated[str, Field(min_length=1, max_length=128, examples=["text/csv"])]
    size: Annotated[int, Field(gt=0, description="Size in bytes of the file to upload.")]

    @field_validator("filename")
    @classmethod
    def _safe_filename(cls, value: str) -> str:
        name = sanitise_filename(value)
        suffixes = [s.lower() for s in PurePosixPath(name).suffixes]
        if suffixes and suffixes[-1] in GZIP_SUFFIXES:
            suffixes.pop()
        if not name or not suffixes or suffixes[-1] not in TEXT_SUFFIXES:
            allowed = ", ".join(sorted(TEXT_SUFFIXES))
            raise ValueError(f"the file must be CSV or TSV ({allowed}), optionally with .gz")
        return name

    @field_validator("content_type")
    @classmethod
    def _text_or_gzip(cls, value: str) -> str:
        media, charset = split_content_type(value)
        if media not in CSV_TYPES | TSV_TYPES | GZIP_TYPES:
            raise ValueError(
                "content_type must be text/csv, text/tab-separated-values or application/gzip"
            )
        if charset is not None:
            import codecs

            try:
                codecs.lookup(charset)
            except LookupError:
                raise ValueError(f"unknown charset {charset!r}") from None
        return f"{media}; charset={charset}" if charset else media

    @field_validator("size")
    @classmethod
    def _within_limit(cls, value: int, _: ValidationInfo) -> int:
        limit = get_settings().upload_max_bytes
        if value > limit:
            raise ValueError(f"the file is {value} bytes; the limit is {limit} bytes")
        return value
