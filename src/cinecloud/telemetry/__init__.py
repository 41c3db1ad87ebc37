"""Telemetry: metric names, logging, cost and (later) tracing."""

from cinecloud.telemetry.cost import UNKNOWN_GPU, gpu_type_of, job_dollars, price_for
from cinecloud.telemetry.metrics import STAGES, Metrics

__all__ = ["STAGES", "UNKNOWN_GPU", "Metrics", "gpu_type_of", "job_dollars", "price_for"]
