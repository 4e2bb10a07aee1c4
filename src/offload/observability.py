"""Powertools Logger, Metrics and Tracer, shared by every function.

Service name, metric namespace and log level come from the standard POWERTOOLS_* and
LOG_LEVEL variables that the template sets.
"""

import threading
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricResolution, MetricUnit


class ThreadSafeMetrics(Metrics):
    """Powertools Metrics whose add_metric may be called from several threads at once (the
    records of a batch run in threads: offload.worker.batch).

    Powertools' add_metric reads a metric's values, appends and writes them back, and past 100
    values prints and clears the set: two threads at once could lose a value or print one
    twice. One lock around it; Logger needs none (its thread_safe_* keys are a ContextVar).
    """

    _lock = threading.Lock()

    def add_metric(
        self,
        name: str,
        unit: MetricUnit | str,
        value: float,
        resolution: MetricResolution | int = 60,
    ) -> None:
        with self._lock:
            super().add_metric(name=name, unit=unit, value=value, resolution=resolution)


logger = Logger()
metrics = ThreadSafeMetrics()

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
