"""Telemetry: metric names, GPU samples, tracing (optional) and logging."""

from cinecloud.telemetry.metrics import STAGES, Metrics, WorkerGpus

__all__ = ["STAGES", "Metrics", "WorkerGpus"]
