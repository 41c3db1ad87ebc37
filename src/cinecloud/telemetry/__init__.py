"""Telemetry: metric names, logging and (later) tracing and cost."""

from cinecloud.telemetry.metrics import STAGES, Metrics

__all__ = ["STAGES", "Metrics"]
