"""Baseline for (a) and (b): a bare FastAPI + Mangum handler with one boto3 SQS client.

One POST route that takes a JSON body and makes one `send_message`, nothing else: no status
record, no task registry, no logging.
"""

import os

import boto3
from fastapi import FastAPI
from mangum import Mangum
from pydantic import BaseModel

app = FastAPI()
sqs = boto3.client("sqs")


class Email(BaseModel):
    to: str
    subject: str
    text: str


@app.post("/emails", status_code=202)
async def create_email(email: Email) -> dict[str, str]:
    response = sqs.send_message(
        QueueUrl=os.environ["BENCH_QUEUE_URL"], MessageBody=email.model_dump_json()
    )
    return {"message_id": response["MessageId"]}


handler = Mangum(app, lifespan="off")
