"""Powertools Logger, Metrics and Tracer, shared by every function.

Service name, metric namespace and log level come from the standard POWERTOOLS_* and
LOG_LEVEL variables that the template sets.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
tracer = Tracer()
