"""The latency model names each request's service and operation as AWS would bill it."""

import pytest
from benchmarks._latency import classify, parse_delays

AUTH = "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/{service}/aws4_request, x"


def headers(service: str, **extra: str) -> dict[str, str]:
    return {"authorization": AUTH.format(service=service), **extra}


@pytest.mark.parametrize(
    ("method", "path", "query", "extra", "operation"),
    [
        ("PUT", "/bucket/uploads/a.csv", "", {}, "PutObject"),
        ("PUT", "/bucket/a.csv", "", {"x-amz-copy-source": "/bucket/b.csv"}, "CopyObject"),
        ("PUT", "/bucket/a.csv", "partNumber=2&uploadId=u1", {}, "UploadPart"),
        ("POST", "/bucket/a.csv", "uploads", {}, "CreateMultipartUpload"),
        ("POST", "/bucket/a.csv", "uploadId=u1", {}, "CompleteMultipartUpload"),
        ("DELETE", "/bucket/a.csv", "uploadId=u1", {}, "AbortMultipartUpload"),
        ("GET", "/bucket/results/x/cleaned.csv", "", {}, "GetObject"),
        ("HEAD", "/bucket/a.csv", "", {}, "HeadObject"),
        ("GET", "/bucket", "list-type=2&prefix=a", {}, "ListObjectsV2"),
    ],
)
def test_s3_rest_requests_are_named_by_botocores_model(
    method: str, path: str, query: str, extra: dict[str, str], operation: str
) -> None:
    assert classify(method, path, query, headers("s3", **extra), b"") == (
        "AKIDBENCH",
        "s3",
        operation,
    )


def test_json_query_and_rest_protocols() -> None:
    target = headers("dynamodb", **{"x-amz-target": "DynamoDB_20120810.UpdateItem"})
    assert classify("POST", "/", "", target, b"")[1:] == ("dynamodb", "UpdateItem")
    sqs = headers("sqs", **{"x-amz-target": "AmazonSQS.SendMessageBatch"})
    assert classify("POST", "/", "", sqs, b"")[1:] == ("sqs", "SendMessageBatch")
    # SES v1 (query protocol, the action in the form body) and SES v2 (REST) share "ses"
    form = headers("ses", **{"content-type": "application/x-www-form-urlencoded"})
    assert classify("POST", "/", "", form, b"Action=SendEmail&Version=2010-12-01")[1:] == (
        "ses",
        "SendEmail",
    )
    assert classify("POST", "/v2/email/outbound-emails", "", headers("ses"), b"")[1:] == (
        "ses",
        "SendEmail",
    )


def test_presigned_requests_and_browser_posts() -> None:
    credential = "AKIDSIGNER/20260101/us-east-1/s3/aws4_request"
    query = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}"

    assert classify("GET", "/bucket/a.csv", query, {}, b"") == (
        "AKIDSIGNER",
        "s3",
        "GetObject",
    )
    form = {"content-type": "multipart/form-data; boundary=x"}
    assert classify("POST", "/bucket", "", form, b"")[1:] == ("s3", "PostObject")


def test_delays_are_configured_over_the_defaults() -> None:
    assert parse_delays("") == {"sqs": 8.0, "dynamodb": 5.0, "ses": 40.0, "s3": 15.0}
    assert parse_delays("ses=60, s3=0")["ses"] == 60.0
    assert parse_delays("ses=60, s3=0")["s3"] == 0.0
    with pytest.raises(ValueError, match="service=milliseconds"):
        parse_delays("ses")
