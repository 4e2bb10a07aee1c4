"""The benchmarks' latency model: moto's server behind a proxy that delays each request by its
service's delay, asynchronously, and counts requests by caller, service and operation."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from benchmarks._latency import Endpoint, aws_endpoint, by_operation

SES_MS = 300.0


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    with aws_endpoint({"ses": SES_MS, "dynamodb": 0, "sqs": 0, "s3": 0}) as endpoint:
        yield endpoint


def client(endpoint: Endpoint, service: str, key: str = "caller-a") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key="secret",
    )


def send(ses: Any) -> None:
    ses.send_email(
        FromEmailAddress="sender@example.com",
        Destination={"ToAddresses": ["ada@example.com"]},
        Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hello"}}}},
    )


def test_each_request_waits_for_its_services_delay(endpoint: Endpoint) -> None:
    # Given SES delayed by 300 ms and DynamoDB not at all
    ses, dynamodb = client(endpoint, "sesv2"), client(endpoint, "dynamodb")
    ses.create_email_identity(EmailIdentity="sender@example.com")
    dynamodb.list_tables()  # a connection open to the proxy

    # When each service is called
    started = time.perf_counter()
    send(ses)
    ses_seconds = time.perf_counter() - started
    started = time.perf_counter()
    dynamodb.list_tables()
    dynamodb_seconds = time.perf_counter() - started

    # Then only SES waited its delay
    assert ses_seconds >= SES_MS / 1000
    assert dynamodb_seconds < SES_MS / 1000


def test_concurrent_requests_wait_side_by_side(endpoint: Endpoint) -> None:
    # Given 8 SES calls at once, each delayed by 300 ms (2.4 s one after another)
    ses = client(endpoint, "sesv2")
    ses.create_email_identity(EmailIdentity="sender@example.com")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: send(ses), range(8)))  # open 8 connections
        started = time.perf_counter()
        list(pool.map(lambda _: send(ses), range(8)))
        elapsed = time.perf_counter() - started
    # Then the proxy sleeps without blocking: they overlap
    assert SES_MS / 1000 <= elapsed < 8 * SES_MS / 1000 * 0.6


def test_requests_are_counted_by_caller_service_and_operation(endpoint: Endpoint) -> None:
    # Given two callers (access keys) and a clean count
    sqs, dynamodb = client(endpoint, "sqs"), client(endpoint, "dynamodb")
    s3 = client(endpoint, "s3", key="caller-b")
    queue = sqs.create_queue(QueueName="counted")["QueueUrl"]
    s3.create_bucket(Bucket="counted-bucket")
    dynamodb.create_table(
        TableName="counted",
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    endpoint.reset()

    # When they make these calls
    sqs.send_message(QueueUrl=queue, MessageBody="1")
    sqs.send_message(QueueUrl=queue, MessageBody="2")
    dynamodb.put_item(TableName="counted", Item={"k": {"S": "a"}})
    dynamodb.update_item(
        TableName="counted",
        Key={"k": {"S": "a"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"S": "1"}},
    )
    s3.put_object(Bucket="counted-bucket", Key="a.csv", Body=b"x")
    assert s3.get_object(Bucket="counted-bucket", Key="a.csv")["Body"].read() == b"x"

    # Then each is counted once, under its caller, service and operation
    counts = endpoint.counts()
    assert by_operation(counts, "caller-a") == {
        "dynamodb.PutItem": 1,
        "dynamodb.UpdateItem": 1,
        "sqs.SendMessage": 2,
    }
    assert by_operation(counts, "caller-b") == {"s3.GetObject": 1, "s3.PutObject": 1}
    endpoint.reset()
    assert endpoint.counts() == {}
