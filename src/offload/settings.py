"""Typed settings, read from the environment when Offload is composed (offload.wiring.build).

On AWS the template sets these variables on each function; locally the runner copies them
from the same template, so there is one source of truth.
"""

import os
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offload.queues import QUEUES

# DynamoDB and SQS calls are idempotent or conditional, so the SDK may retry them: at most
# AWS_MAX_ATTEMPTS attempts of AWS_CONNECT_TIMEOUT_SECONDS + AWS_READ_TIMEOUT_SECONDS each, with
# the SDK's backoff between them (standard mode: at most 1 s, then 2 s, ... capped at 20 s).
AWS_MAX_ATTEMPTS = 3
AWS_CONNECT_TIMEOUT_SECONDS = 1.0
AWS_READ_TIMEOUT_SECONDS = 2.0


def aws_call_worst_seconds() -> float:
    """The longest one DynamoDB or SQS call can take before it fails: 12 s by default."""
    backoffs = sum(min(2.0**retry, 20.0) for retry in range(AWS_MAX_ATTEMPTS - 1))
    return AWS_MAX_ATTEMPTS * (AWS_CONNECT_TIMEOUT_SECONDS + AWS_READ_TIMEOUT_SECONDS) + backoffs


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OFFLOAD_", extra="ignore")

    stage: str = "local"
    tasks_table: str = ""
    idempotency_table: str = ""
    # Each queue's URL and its DLQ's, by queue name, from the variables offload.queues names
    # (OFFLOAD_TASK_QUEUE_URL, OFFLOAD_TASK_DLQ_URL, ...); see queue_url() and dlq_url().
    queue_urls: dict[str, str] = Field(default_factory=dict)
    dlq_urls: dict[str, str] = Field(default_factory=dict)
    sender_email: str = "noreply@example.com"
    # Receives after which SQS moves a message to the DLQ; mirrors the queue's redrive policy.
    # With the backoff below, 12 receives outlive 705 to 1410 s of failures (README, "Retries").
    max_receive_count: int = Field(default=12, ge=1)
    task_ttl_days: int = Field(default=14, ge=1)
    # How long the task queues keep a message (their MessageRetentionPeriod: 4 days). A task
    # with no record yet reads as `queued` to its owner for this long after its id was issued.
    message_retention_seconds: int = Field(default=345_600, ge=60, le=1_209_600)
    # Retry backoff for transient errors: exponential from the receive count, with jitter, capped.
    retry_base_seconds: float = Field(default=2.0, ge=0)
    retry_max_seconds: int = Field(default=300, ge=0, le=43_200)
    # SES SendEmail has no idempotency token: one attempt per delivery (the queue retries), cut
    # off by these timeouts, so that its worst case is known.
    ses_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    ses_read_timeout_seconds: float = Field(default=3.0, gt=0)
    # A worker stops taking records when less than this much of its Lambda time is left. It
    # must cover one SES send and the write that records it (checked below).
    record_time_budget_ms: int = Field(default=20_000, ge=0)
    # How many records of one SQS batch (or calls of one direct event) run at once, each in a
    # thread of its own; 1 runs them one after another. A worker's calls wait on the network,
    # so overlapping them is what keeps up with SES and DynamoDB (the default batch is 10).
    record_concurrency: int = Field(default=10, ge=1, le=100)
    # How long the API remembers an Idempotency-Key (offload.idempotency_keys).
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    # Claim check: a task message larger than this (the queues' MaximumMessageSize) is stored
    # in the payload bucket and the SQS message carries a pointer.
    max_message_bytes: int = Field(default=1_048_576, ge=1_024, le=1_048_576)
    payload_bucket: str = ""
    # Modules or packages the workers may import task functions from, comma separated; each is
    # imported before the first task, so that its @task functions are registered (registry.py).
    task_modules: str = ""
    # Uploads (POST /uploads → S3 → UploadQueue → UploadWorker).
    upload_bucket: str = ""
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
    # Tasks run more than 15 minutes later: one-time EventBridge Scheduler schedules in this
    # group, sent by this role (it may send to the task queues), failed deliveries to this DLQ.
    schedule_group: str = ""
    scheduler_role_arn: str = ""
    scheduler_dlq_arn: str = ""
    # Security. When set, every route but /health needs `Authorization: Bearer <api_token>`
    # (the local system; on AWS the HTTP API's JWT authorizer guards the routes instead).
    # Set but empty is an error, never "open": see _api_token_not_empty.
    api_token: SecretStr | None = None
    # Largest request body the API reads; bigger ones get 413.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # Comma-separated addresses or domains email may go to; empty allows any.
    allowed_recipients: str = ""

    @model_validator(mode="before")
    @classmethod
    def _queue_urls_from_the_environment(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data.setdefault(
                "queue_urls", {q.name: os.environ.get(q.url_variable, "") for q in QUEUES}
            )
            data.setdefault(
                "dlq_urls", {q.name: os.environ.get(q.dlq_url_variable, "") for q in QUEUES}
            )
        return data

    @field_validator("api_token")
    @classmethod
    def _api_token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would match an empty Authorization header: refuse it rather than
        # guess whether "empty" was meant as "off".
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "OFFLOAD_API_TOKEN is set but empty: set a token, or unset the variable "
                "to leave the API without one"
            )
        return value

    @property
    def ses_send_seconds(self) -> float:
        """Time an invocation must have left to call SES: the one attempt's worst case, then the
        worst case of the DynamoDB write that records the email (16 s by default)."""
        ses = self.ses_connect_timeout_seconds + self.ses_read_timeout_seconds
        return ses + aws_call_worst_seconds()

    def queue_url(self, queue: str) -> str:
        """The queue's URL ("" if its variable is not set)."""
        return self.queue_urls.get(queue, "")

    def dlq_url(self, queue: str) -> str:
        """The URL of the queue's dead-letter queue ("" if its variable is not set)."""
        return self.dlq_urls.get(queue, "")
