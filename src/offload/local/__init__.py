"""The local system: moto's server provisioned from template.yaml, the API under uvicorn, and
one poller per SQS event source mapping feeding the real worker handlers."""
