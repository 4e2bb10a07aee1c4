"""SQS-triggered Lambda handlers. Each is wiring only; the logic is offload.worker."""
