"""Powertools Logger, Metrics and Tracer, shared by every function.

Service name, metric namespace and log level come from the standard POWERTOOLS_* and
LOG_LEVEL variables that the template sets.
"""

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()

if TYPE_CHECKING:
    tracer: Tracer


def __getattr__(name: str) -> Any:
    # Tracer() imports the X-Ray SDK (~150-250 ms), even with tracing disabled. It is built on
    # first use (`from offload.observability import tracer`): modules that never trace, like
    # the API, do not pay for it at cold start.
    if name == "tracer":
        built = globals()["tracer"] = Tracer()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
