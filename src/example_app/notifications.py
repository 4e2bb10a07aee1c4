"""The write_log task: FastAPI's seed example, where log.txt becomes a CloudWatch log stream."""

from offload.observability import logger
from offload.registry import task


# A name of its own: messages (events/, the DLQ) name it "write_log", not by its module.
@task(name="write_log")
def write_log(message: str) -> None:
    """Write one structured log event (JSON, to CloudWatch Logs on AWS)."""
    logger.info(message, extra={"event": "write_log"})
