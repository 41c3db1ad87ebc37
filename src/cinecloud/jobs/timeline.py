"""When things happened to a job, read from its events."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx
from cinecloud.jobs.records import JobRecord

__all__ = ["queued_since"]


def queued_since(engine: Engine, job: JobRecord) -> float:
    """When ``job`` last entered the queue: its ``queued`` event, or the ``requeued`` one
    of the attempt before (read before the current attempt started)."""
    if job.attempts <= 1:
        return job.created_at
    e = t.job_events.c
    q = select(func.max(e.created_at)).where(e.job_id == job.id, e.type.in_(("queued", "requeued")))
    with read_tx(engine) as conn:
        found = conn.execute(q).scalar()
    return float(found) if found is not None else job.created_at
