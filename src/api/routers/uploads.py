"""Uploads: the client POSTs the file straight to S3 with a presigned POST; a worker cleans it."""

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.models import ErrorDetail
from api.security import BODY_ERRORS, UNAUTHORIZED
from api.urls import url_for
from example_app.uploads.models import UPLOAD_KIND, UploadCreate, result_keys
from offload.aws import uploads_s3
from offload.fastapi import OffloadDep, caller_subject
from offload.models import TaskState, unrecorded, utcnow
from offload.object_keys import object_key
from offload.task_ids import new_task_id
from offload.wiring import Offload

router = APIRouter(prefix="/uploads", tags=["uploads"], responses=UNAUTHORIZED)


class UploadCreated(BaseModel):
    upload_id: UUID
    state: TaskState = TaskState.QUEUED
    key: str = Field(description="Where the file goes in the upload bucket.")
    url: str = Field(description="POST the file here as multipart/form-data...")
    fields: dict[str, str] = Field(description="...with these form fields first, then `file`.")
    expires_in: int = Field(description="Seconds the presigned POST stays valid.")
    size: int = Field(description="The form accepts a file of exactly this many bytes.")
    max_bytes: int = Field(description="The largest size POST /uploads accepts.")
    status_url: str


class UploadPublic(BaseModel):
    upload_id: UUID
    state: TaskState
    attempts: int
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    summary: dict[str, Any] | None = None
    results: dict[str, str] | None = Field(
        default=None, description="Presigned GET URLs of cleaned_csv and summary_json."
    )


def _bucket(offload: Offload) -> str:
    bucket = offload.settings.upload_bucket
    if not bucket:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="uploads are not configured"
        )
    return bucket


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=BODY_ERRORS | {status.HTTP_503_SERVICE_UNAVAILABLE: {"model": ErrorDetail}},
)
async def create_upload(
    upload: UploadCreate, request: Request, response: Response, offload: OffloadDep
) -> UploadCreated:
    """Hand out a presigned POST for exactly this file: its key, its content type and its
    declared size. The upload is recorded as the caller's, queued (one write: its worker
    records it from the S3 event, which names no owner, and GET /tasks lists it)."""
    settings = offload.settings
    bucket = _bucket(offload)
    owner = caller_subject(request)
    upload_id = new_task_id(owner)
    key = object_key(upload_id, upload.filename)
    post = await run_in_threadpool(
        lambda: uploads_s3.presigned_post(
            offload.clients.s3_signer,
            bucket,
            key,
            content_type=upload.content_type,
            size=upload.size,
            expires_in=settings.upload_url_expires_seconds,
        )
    )
    await run_in_threadpool(offload.tasks.create, upload_id, UPLOAD_KIND, owner)
    status_url = url_for(request, "get_upload", upload_id=upload_id)
    response.headers["Location"] = status_url
    return UploadCreated(
        upload_id=upload_id,
        key=key,
        url=post["url"],
        fields=post["fields"],
        expires_in=settings.upload_url_expires_seconds,
        size=upload.size,
        max_bytes=settings.upload_max_bytes,
        status_url=status_url,
    )


@router.get(
    "/{upload_id}",
    name="get_upload",
    responses={status.HTTP_404_NOT_FOUND: {"model": ErrorDetail, "description": "No such upload."}},
)
async def get_upload(upload_id: UUID, request: Request, offload: OffloadDep) -> UploadPublic:
    """The upload's state; once it succeeded, its summary and links to the results.

    Only its creator (the JWT subject) sees it; to anyone else it does not exist.
    """
    subject = caller_subject(request)
    record = await run_in_threadpool(offload.tasks.get, upload_id)
    if record is None:  # not uploaded yet, or not yet picked up by its worker
        settings = offload.settings
        # The file may arrive until the presigned POST expires; its event waits in the queue.
        window = settings.upload_url_expires_seconds + settings.message_retention_seconds
        record = unrecorded(upload_id, subject, utcnow(), window)
    visible = record is not None and record.visible_to(subject)
    if record is None or not visible or record.kind not in (UPLOAD_KIND, None):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no upload {upload_id}")
    summary = record.result if isinstance(record.result, dict) else None
    results = None
    if record.state is TaskState.SUCCEEDED:
        bucket = _bucket(offload)
        expires = offload.settings.result_url_expires_seconds
        results = {
            name: uploads_s3.presigned_get(
                offload.clients.s3_signer,
                bucket,
                key,
                expires_in=expires,
                filename=key.rsplit("/", 1)[-1],
            )
            for name, key in result_keys(upload_id).items()
        }
    return UploadPublic(
        upload_id=upload_id,
        state=record.state,
        attempts=record.attempts,
        created_at=record.created_at,
        updated_at=record.updated_at,
        error=record.error,
        summary=summary,
        results=results,
    )
