"""Typed settings, read from the environment once, on first use.

On AWS the template sets these variables on each function; locally the runner copies them
from the same template, so there is one source of truth.
"""

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OFFLOAD_", extra="ignore")

    stage: str = "local"
    tasks_table: str = ""
    idempotency_table: str = ""
    task_queue_url: str = ""
    email_queue_url: str = ""
    task_dlq_url: str = ""
    email_dlq_url: str = ""
    sender_email: str = "noreply@example.com"
    # Receives after which SQS moves a message to the DLQ; mirrors the queue's redrive policy.
    max_receive_count: int = Field(default=5, ge=1)
    task_ttl_days: int = Field(default=14, ge=1)
    # Retry backoff for transient errors: exponential from the receive count, with jitter, capped.
    retry_base_seconds: float = Field(default=2.0, ge=0)
    retry_max_seconds: int = Field(default=300, ge=0, le=43_200)
    # A worker stops taking records when less than this much of its Lambda time is left.
    record_time_budget_ms: int = Field(default=5_000, ge=0)
    # How long a finished task's idempotency record keeps duplicates from running it again.
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    # Claim check: a task message larger than this (the queues' MaximumMessageSize) is stored
    # in the payload bucket and the SQS message carries a pointer.
    max_message_bytes: int = Field(default=262_144, ge=1_024, le=1_048_576)
    payload_bucket: str = ""
    # Extra modules whose @task functions should be registered, comma separated.
    task_modules: str = ""
    # Uploads (POST /uploads → S3 → UploadQueue → UploadWorker).
    upload_bucket: str = ""
    upload_queue_url: str = ""
    upload_dlq_url: str = ""
    upload_max_bytes: int = Field(default=1_073_741_824, ge=1)
    # A gzip upload may expand to at most this many bytes (a guard against gzip bombs). 2 GiB is
    # what the UploadWorker processes in well under its 300 s: the pipeline ran a typical CSV at
    # 30-32 MB/s on one core of a shared 2-core machine; Lambda's 1,024 MB get about 0.58 vCPU,
    # so about 17 MB/s, 5 GB in 295 s; 2 GiB leaves a factor 2.4 for S3 I/O and slower shapes.
    # Whatever the limit, a file that would outrun the timeout fails with the reason (deadline).
    upload_max_expanded_bytes: int = Field(default=2_147_483_648, ge=1)
    # Unique rows remembered to drop duplicates (about 60 bytes each); past it, see the summary.
    upload_max_tracked_rows: int = Field(default=1_000_000, ge=0)
    upload_url_expires_seconds: int = Field(default=900, ge=60, le=604_800)
    result_url_expires_seconds: int = Field(default=3_600, ge=60, le=604_800)
    # Security. When set, every route but /health needs `Authorization: Bearer <api_token>`
    # (the local system; on AWS the HTTP API's JWT authorizer guards the routes instead).
    api_token: SecretStr | None = None
    # Largest request body the API reads; bigger ones get 413.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # Comma-separated addresses or domains email may go to; empty allows any.
    allowed_recipients: str = ""

    def queue_url(self, queue: str) -> str:
        urls = {"tasks": self.task_queue_url, "email": self.email_queue_url}
        return urls[queue]

    def dlq_url(self, queue: str) -> str:
        urls = {"tasks": self.task_dlq_url, "email": self.email_dlq_url}
        return urls[queue]


@lru_cache
def get_settings() -> Settings:
    return Settings()
