"""Pure summaries for the operators' view: stage-latency percentiles over time,
throughput, and how busy a worker was. Time is passed in; nothing here reads a clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cinecloud.telemetry.metrics import STAGES

__all__ = ["QUANTILES", "LatencyBucket", "busy_share", "latency_series"]

#: The percentiles reported for every stage.
QUANTILES = (50, 95, 99)


@dataclass(frozen=True)
class LatencyBucket:
    """Jobs completed in ``[start, end)``: how many, per minute, and each stage's
    percentiles (``{"denoise": {"p50": ..., "p95": ..., "p99": ...}}``; stages no job
    of the bucket timed are left out)."""

    start: float
    end: float
    completed: int
    per_minute: float
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


def latency_series(
    samples: Iterable[tuple[float, Mapping[str, float]]],
    *,
    now: float,
    window_s: float,
    buckets: int,
    stages: Sequence[str] = STAGES,
) -> list[LatencyBucket]:
    """``samples`` are ``(completed_at, timings)`` of finished jobs; the result covers
    ``[now - window_s, now)`` in ``buckets`` equal buckets, oldest first. Samples outside
    the window are ignored."""
    if window_s <= 0 or buckets < 1:
        raise ValueError(f"need window_s > 0 and buckets >= 1 (got {window_s}, {buckets})")
    width = window_s / buckets
    start = now - window_s
    grouped: list[list[Mapping[str, float]]] = [[] for _ in range(buckets)]
    for completed_at, timings in samples:
        index = int((completed_at - start) // width)
        if 0 <= index < buckets:
            grouped[index].append(timings)
        elif index == buckets and completed_at <= now:  # exactly ``now``: the last bucket
            grouped[-1].append(timings)
    return [
        LatencyBucket(
            start=start + i * width,
            end=start + (i + 1) * width,
            completed=len(group),
            per_minute=len(group) * 60.0 / width,
            stages=_percentiles(group, stages),
        )
        for i, group in enumerate(grouped)
    ]


def _percentiles(
    group: Sequence[Mapping[str, float]], stages: Sequence[str]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stage in stages:
        values = [float(t[stage]) for t in group if stage in t]
        if not values:
            continue
        points = np.percentile(np.asarray(values), QUANTILES)
        out[stage] = {f"p{q}": round(float(v), 4) for q, v in zip(QUANTILES, points, strict=True)}
    return out


def busy_share(spans: Iterable[tuple[float, float]], *, since: float, now: float) -> float:
    """The share (0..1) of ``[since, now]`` covered by ``spans`` (``(start, end)``
    pairs that may overlap, e.g. a job rendering while the next one denoises)."""
    if now <= since:
        return 0.0
    clipped = sorted((max(a, since), min(b, now)) for a, b in spans if b > since and a < now)
    covered, reach = 0.0, since
    for a, b in clipped:
        if b <= reach:
            continue
        covered += b - max(a, reach)
        reach = b
    return min(1.0, covered / (now - since))
