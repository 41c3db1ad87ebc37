"""The operators' overview (``GET /v1/admin/overview``): the queue by model and priority,
the workers and what they run, stage-latency percentiles and throughput over a window,
and the GPU time each video took."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from cinecloud.api.state import AppState
from cinecloud.jobs import WorkerRecord
from cinecloud.jobs.stats import FinishedJob, RunningJob, StatsReader
from cinecloud.telemetry.metrics import STAGES
from cinecloud.telemetry.ops import QUANTILES, busy_share, latency_series

__all__ = ["WORKERS_SEEN_S", "build_overview"]

#: A worker is listed while it was seen this recently (as the workers gauge counts them).
WORKERS_SEEN_S = 60.0


def build_overview(state: AppState, *, window_s: float, buckets: int) -> dict[str, Any]:
    """The overview at the state's clock; reads the database (run it off the event loop)."""
    now = state.clock()
    since = now - window_s
    reader = StatsReader(state.jobs.engine)
    queue = reader.queue()
    running = reader.running()
    finished = reader.finished_since(since)
    workers = state.workers.active(WORKERS_SEEN_S)
    spans = reader.busy_intervals(since, now)
    series = latency_series(
        ((j.completed_at, j.timings) for j in finished), now=now, window_s=window_s, buckets=buckets
    )
    in_progress: dict[str, int] = defaultdict(int)
    for job in running:
        in_progress[job.model] += 1
    return {
        "object": "admin.overview",
        "now": now,
        "totals": {
            "queued": sum(g.queued for g in queue),
            "in_progress": len(running),
            "workers": len(workers),
            "completed": len(finished),
        },
        "queue": [
            {
                "model": g.model,
                "priority": g.priority,
                "queued": g.queued,
                "oldest_wait_s": round(max(0.0, now - g.oldest_created_at), 3),
            }
            for g in queue
        ],
        "in_progress": [{"model": m, "jobs": n} for m, n in sorted(in_progress.items())],
        "workers": [_worker(w, running, spans, since, now) for w in workers],
        "latency": {
            "window_s": window_s,
            "bucket_s": window_s / buckets,
            "stages": list(STAGES),
            "quantiles": list(QUANTILES),
            "buckets": [asdict(b) for b in series],
        },
        "per_video": _per_video(finished),
    }


def _worker(
    w: WorkerRecord,
    running: Sequence[RunningJob],
    spans: dict[str, list[tuple[float, float]]],
    since: float,
    now: float,
) -> dict[str, Any]:
    caps = w.capabilities
    jobs = [j for j in running if j.worker_id == w.id]
    # the share of the window (or of its time since it registered) it ran jobs
    busy = busy_share(spans.get(w.id, []), since=max(since, w.registered_at), now=now)
    return {
        "id": w.id,
        "name": w.name,
        "status": w.status,
        "device": caps.get("device", ""),
        "gpus": caps.get("gpus", []),
        "models": caps.get("models", []),
        "width": caps.get("width", 1),
        "hostname": caps.get("hostname", ""),
        "last_seen_s": round(max(0.0, now - w.last_seen_at), 3),
        "busy": round(busy, 4),
        "jobs": [
            {
                "id": j.id,
                "model": j.model,
                "stage": j.stage,
                "step": j.step,
                "total_steps": j.total_steps,
                "eta_s": j.eta_s,
                "progress": j.progress,
            }
            for j in jobs
        ],
    }


def _per_video(finished: Sequence[FinishedJob]) -> list[dict[str, Any]]:
    """GPU-seconds per completed video, by model (what a video costs in device time)."""
    by_model: dict[str, list[float]] = defaultdict(list)
    for job in finished:
        by_model[job.model].append(job.gpu_seconds)
    out = []
    for model, values in sorted(by_model.items()):
        arr = np.asarray(values)
        out.append(
            {
                "model": model,
                "videos": len(values),
                "gpu_seconds_mean": round(float(arr.mean()), 4),
                "gpu_seconds_p95": round(float(np.percentile(arr, 95)), 4),
                "gpu_seconds_total": round(float(arr.sum()), 4),
            }
        )
    return out
