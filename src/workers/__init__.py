"""SQS-triggered Lambda handlers. Each is wiring only; the lifecycle is offload.worker."""
