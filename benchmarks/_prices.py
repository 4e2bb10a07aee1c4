"""AWS list prices for the cost per million tasks: us-east-1, USD, on-demand, no free tier.

Checked on 2026-06 against the public pricing pages (and secondary sources quoting them):
- SQS: https://aws.amazon.com/sqs/pricing/ — standard queue, $0.40 per million requests (first
  100 billion a month); every 64 KB chunk of a request's payload is billed as one request.
- DynamoDB: https://aws.amazon.com/dynamodb/pricing/on-demand/ — on-demand, $0.625 per million
  write request units and $0.125 per million read request units since 2024-11-01 (a 50% cut
  from $1.25 and $0.25; issue 11's "$7.53 per million tasks" used the older $1.25). One WRU
  writes up to 1 KB; one RRU reads up to 4 KB strongly consistent (two eventually consistent).
- Lambda: https://aws.amazon.com/lambda/pricing/ — arm64, $0.0000133334 per GB-second (first
  7.5 billion GB-s a month) and $0.20 per million requests.
- SES: https://aws.amazon.com/ses/pricing/ — $0.10 per 1,000 outbound emails.
"""

SOURCE_DATE = "2026-06"
SQS_PER_REQUEST = 0.40 / 1e6
DYNAMODB_PER_WRU = 0.625 / 1e6
DYNAMODB_PER_RRU = 0.125 / 1e6
DYNAMODB_PER_WRU_BEFORE_2024_11 = 1.25 / 1e6
LAMBDA_ARM64_PER_GB_SECOND = 0.0000133334
LAMBDA_PER_REQUEST = 0.20 / 1e6
SES_PER_EMAIL = 0.10 / 1000

# DynamoDB operations by what they consume (items under 1 KB: one unit per item).
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
DYNAMODB_READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
# What Lambda's SQS event source does per batch, billed to the account: one ReceiveMessage and
# one DeleteMessageBatch (long polls that come back empty are left out).
EVENT_SOURCE_REQUESTS_PER_BATCH = 2


def lambda_cost(memory_mb: int, seconds: float) -> float:
    """One invocation: its GB-seconds and its request."""
    return memory_mb / 1024 * seconds * LAMBDA_ARM64_PER_GB_SECOND + LAMBDA_PER_REQUEST
