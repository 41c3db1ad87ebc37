"""OpenTelemetry tracing, optional: one trace per job, across the control plane and workers.

Without the ``otel`` extra (``opentelemetry-api`` and ``-sdk``) every call here does
nothing and returns ``None``: nothing else needs to know whether tracing is on.

The trace of one job::

    submit                     control plane, POST /v1/videos (under FastAPI's server
    ├── queue_wait             span, or the caller's traceparent header); queue_wait
    └── run                    is recorded at lease; run and its stages by the worker
        ├── model_load         (first job after a model load)
        ├── text_encode
        ├── denoise
        ├── decode
        ├── render
        └── upload

The submit span's W3C ``traceparent`` is stored with the job and handed to the worker in
its ``RunJob``, so spans from other processes join the same trace. Spans of work measured
elsewhere (the queue wait, the stages the engine child timed) are recorded with their
measured start and end (:func:`record_span`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cinecloud.config import TracingConfig

__all__ = [
    "SpanRecord",
    "SubmitSpan",
    "otel_available",
    "record_span",
    "setup_tracing",
    "submit_span",
]

log = logging.getLogger(__name__)

try:  # the optional extra
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR: Any = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised by a subprocess test
    _trace = None  # type: ignore[assignment]
    _PROPAGATOR = None

TRACER = "cinecloud"
_NEEDS_OTEL = "tracing.exporter = {!r} needs the OpenTelemetry SDK: pip install 'cinecloud[otel]'"
Attributes = Mapping[str, str | int | float | bool]


def otel_available() -> bool:
    return _trace is not None


def setup_tracing(cfg: TracingConfig, role: str) -> bool:
    """Install a tracer provider exporting as ``cfg.exporter`` says; True if one was.

    ``exporter = "none"`` leaves the process's provider alone (e.g. one a test or
    ``opentelemetry-instrument`` set up). Any other exporter needs the ``otel`` extra.
    """
    if cfg.exporter == "none":
        return False
    if _trace is None:
        raise RuntimeError(_NEEDS_OTEL.format(cfg.exporter))
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise RuntimeError(_NEEDS_OTEL.format(cfg.exporter)) from None

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"{cfg.service_name}-{role}", "cinecloud.role": role}
        ),
        sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter(cfg.exporter)))
    _trace.set_tracer_provider(provider)
    return True


def _exporter(kind: str) -> Any:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise RuntimeError(
            "tracing.exporter = 'otlp' needs pip install opentelemetry-exporter-otlp-proto-http"
        ) from None
    return OTLPSpanExporter()


def _context(traceparent: str | None) -> Any:
    """The OpenTelemetry context whose parent is ``traceparent`` (None: a new trace)."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def _traceparent(span: Any) -> str | None:
    assert _trace is not None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=_trace.set_span_in_context(span))
    return carrier.get("traceparent")


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


@dataclass
class SubmitSpan:
    """A live span; ``traceparent`` is None when tracing is off or not sampled."""

    traceparent: str | None = None
    _span: Any = None

    def set(self, key: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)


@contextlib.contextmanager
def submit_span(
    name: str, parent: str | None = None, attributes: Attributes | None = None
) -> Iterator[SubmitSpan]:
    """A span around a request's handling. Inside a traced request (FastAPI's own
    telemetry makes a server span per request when a tracer provider is set) it is a
    child of that; otherwise a server span, child of the caller's ``parent`` if any."""
    if _trace is None:
        yield SubmitSpan()
        return
    tracer = _trace.get_tracer(TRACER)
    inside = _trace.get_current_span().get_span_context().is_valid
    with tracer.start_as_current_span(
        name,
        context=None if inside else _context(parent),
        kind=SpanKind.INTERNAL if inside else SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        recording = span.get_span_context().is_valid and span.is_recording()
        yield SubmitSpan(_traceparent(span) if recording else parent, span)


@dataclass(frozen=True)
class SpanRecord:
    """A span measured elsewhere: its name, start and end (Unix seconds), attributes."""

    name: str
    start: float
    end: float
    attributes: Mapping[str, str | int | float | bool] = field(default_factory=dict)


def record_span(
    span: SpanRecord,
    parent: str | None,
    *,
    children: Sequence[SpanRecord] = (),
    error: str | None = None,
    kind: str = "internal",
) -> str | None:
    """Record a finished span (and its finished children) under ``parent``.

    Returns the span's own ``traceparent``; None when tracing is off or there is no
    parent to join (a job submitted while tracing was off gets no orphan spans).
    """
    if _trace is None or not parent:
        return None
    tracer = _trace.get_tracer(TRACER)
    otel_kind = SpanKind.CONSUMER if kind == "consumer" else SpanKind.INTERNAL
    outer = tracer.start_span(
        span.name,
        context=_context(parent),
        kind=otel_kind,
        attributes=dict(span.attributes),
        start_time=_ns(span.start),
    )
    inner_ctx = _trace.set_span_in_context(outer)
    for child in children:
        inner = tracer.start_span(
            child.name,
            context=inner_ctx,
            attributes=dict(child.attributes),
            start_time=_ns(child.start),
        )
        inner.end(end_time=_ns(max(child.end, child.start)))
    if error is not None:
        outer.set_status(Status(StatusCode.ERROR, error))
    own = _traceparent(outer) if outer.is_recording() else None
    outer.end(end_time=_ns(max(span.end, span.start)))
    return own
