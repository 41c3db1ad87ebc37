"""Read-only views of the whole queue for operators: what waits, what runs, what finished.

These read across tenants and are meant for admin endpoints only. They return plain
records; summarising them (percentiles, busy shares) is left to pure functions above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, or_, select

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx
from cinecloud.jobs.lifecycle import JobStatus

__all__ = ["FinishedJob", "QueueGroup", "RunningJob", "StatsReader"]


@dataclass(frozen=True)
class QueueGroup:
    """Queued jobs of one model at one priority."""

    model: str
    priority: int
    queued: int
    oldest_created_at: float


@dataclass(frozen=True)
class RunningJob:
    id: str
    tenant_id: str
    model: str
    worker_id: str | None
    started_at: float | None
    stage: str | None
    step: int | None
    total_steps: int | None
    eta_s: float | None
    progress: int


@dataclass(frozen=True)
class FinishedJob:
    """A completed job's figures: when, where it ran, its stage timings and GPU time."""

    id: str
    model: str
    worker_id: str | None
    started_at: float | None
    completed_at: float
    timings: dict[str, float]
    gpu_seconds: float


class StatsReader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def queue(self) -> list[QueueGroup]:
        """Queued jobs by model and priority, highest priority first."""
        c = t.jobs.c
        q = (
            select(c.model, c.priority, func.count(), func.min(c.created_at))
            .where(c.status == JobStatus.QUEUED.value, c.deleted_at.is_(None))
            .group_by(c.model, c.priority)
            .order_by(c.priority.desc(), c.model)
        )
        with read_tx(self.engine) as conn:
            rows = conn.execute(q).all()
        return [QueueGroup(r[0], int(r[1]), int(r[2]), float(r[3])) for r in rows]

    def running(self) -> list[RunningJob]:
        """Jobs leased to a worker now, oldest first."""
        c = t.jobs.c
        q = (
            select(
                c.id,
                c.tenant_id,
                c.model,
                c.lease_owner.label("worker_id"),
                c.started_at,
                c.stage,
                c.step,
                c.total_steps,
                c.eta_s,
                c.progress,
            )
            .where(c.status == JobStatus.IN_PROGRESS.value, c.deleted_at.is_(None))
            .order_by(c.started_at)
        )
        with read_tx(self.engine) as conn:
            return [RunningJob(**r) for r in conn.execute(q).mappings().all()]

    def finished_since(self, since: float, limit: int = 5000) -> list[FinishedJob]:
        """Jobs completed at or after ``since`` (the newest ``limit``), oldest first.

        ``worker_id`` is the lease owner of the completed attempt (``complete`` leaves it).
        """
        c = t.jobs.c
        q = (
            select(
                c.id,
                c.model,
                c.lease_owner,
                c.started_at,
                c.completed_at,
                c.timings,
                c.gpu_seconds,
            )
            .where(c.status == JobStatus.COMPLETED.value, c.completed_at >= since)
            .order_by(c.completed_at.desc())
            .limit(limit)
        )
        with read_tx(self.engine) as conn:
            rows = conn.execute(q).all()
        return [_finished(r) for r in reversed(rows)]

    def busy_intervals(self, since: float, now: float) -> dict[str, list[tuple[float, float]]]:
        """For each worker, the (start, end) spans of the attempts it ran that overlap
        ``[since, now]``: completed ones and the ones it runs now (ending ``now``)."""
        c = t.jobs.c
        q = select(c.lease_owner, c.started_at, c.completed_at, c.status).where(
            c.lease_owner.is_not(None),
            c.started_at.is_not(None),
            or_(
                c.status == JobStatus.IN_PROGRESS.value,
                (c.status == JobStatus.COMPLETED.value) & (c.completed_at >= since),
            ),
        )
        spans: dict[str, list[tuple[float, float]]] = {}
        with read_tx(self.engine) as conn:
            for owner, started, completed, status in conn.execute(q).all():
                end = now if status == JobStatus.IN_PROGRESS.value else float(completed)
                spans.setdefault(str(owner), []).append((float(started), end))
        return spans


def _finished(row: Any) -> FinishedJob:
    timings = {str(k): float(v) for k, v in (row[5] or {}).items()}
    return FinishedJob(
        id=row[0],
        model=row[1],
        worker_id=row[2],
        started_at=row[3],
        completed_at=float(row[4]),
        timings=timings,
        gpu_seconds=float(row[6] or 0.0),
    )
