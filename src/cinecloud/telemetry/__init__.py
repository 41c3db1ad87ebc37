"""Telemetry: metric names, GPU samples, cost, tracing (optional) and logging."""

from cinecloud.telemetry.cost import UNKNOWN_GPU, gpu_type_of, job_dollars, price_for
from cinecloud.telemetry.metrics import STAGES, Metrics, WorkerGpus

__all__ = [
    "STAGES",
    "UNKNOWN_GPU",
    "Metrics",
    "WorkerGpus",
    "gpu_type_of",
    "job_dollars",
    "price_for",
]
