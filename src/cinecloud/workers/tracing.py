"""A job's run on this worker as spans of the job's trace (``telemetry.tracing``).

The engine child times its stages with the wall clock (:func:`engine_spans`) and sends
them in its ``Done``; the parent adds the model load and the upload it timed itself,
then records one ``run`` span under the job's ``traceparent`` with a child per stage
(:func:`trace_run`). Recording after the fact, with the measured times, keeps spans out
of the engine's loop and works however many processes the stages ran in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cinecloud.telemetry.tracing import SpanRecord, record_span
from cinecloud.workers.messages import RunJob

__all__ = ["STAGE_ORDER", "engine_spans", "trace_run"]

STAGE_ORDER = ("model_load", "text_encode", "denoise", "decode", "render", "upload")


def engine_spans(
    started: float, denoise_at: float | None, ended: float, timings: Mapping[str, float]
) -> dict[str, list[float]]:
    """The engine stages' wall-clock spans of one run.

    ``started`` and ``ended`` bracket the runner's ``run``; ``denoise_at`` is when it
    reported denoising step 0 (None: it reported none). The runner times text encode,
    denoise and decode back to back, so text encode starts the run, decode ends it and
    denoise lies between (its start taken from step 0 when known).
    """
    encode = float(timings.get("text_encode", 0.0))
    decode = float(timings.get("decode", 0.0))
    decode_start = max(started, ended - decode)
    denoise_start = denoise_at if denoise_at is not None else started + encode
    denoise_start = min(max(denoise_start, started), decode_start)
    return {
        "text_encode": [started, min(started + encode, denoise_start)],
        "denoise": [denoise_start, decode_start],
        "decode": [decode_start, ended],
    }


def trace_run(
    job: RunJob,
    leased_at: float,
    ended: float,
    stages: Mapping[str, Sequence[float]],
    *,
    error: str | None = None,
) -> str | None:
    """Record the ``run`` span of ``job`` (this attempt) with its stages as children."""
    attrs = {"cinecloud.job_id": job.job_id, "cinecloud.model": job.model}
    children = [
        SpanRecord(name, float(stages[name][0]), float(stages[name][1]), attrs)
        for name in STAGE_ORDER
        if name in stages
    ]
    # A model loaded for this job (the first after a start) began before its lease.
    start = min([leased_at, *(c.start for c in children)])
    run = SpanRecord("run", start, ended, {**attrs, "cinecloud.attempt": job.attempt})
    return record_span(run, job.traceparent, children=children, error=error)
