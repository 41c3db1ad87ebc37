"""Usage read from the jobs table: what tenants ran, per day (billing) and lately
(fair share).

A completed job carries its bill (``gpu_type``, ``gpu_count``, ``spot``, ``cost_usd``
and the UTC ``billed_day`` it completed on; see :class:`~cinecloud.jobs.records.Billing`).
Its GPU-seconds are the engine's wall time times the GPUs it held. Jobs that did not
complete (failed, including by deadline, or canceled) carry no bill.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, or_, select

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx
from cinecloud.jobs.lifecycle import JobStatus

__all__ = ["UsageLedger", "UsageRow"]


@dataclass(frozen=True)
class UsageRow:
    """One tenant's completed jobs of one UTC day on one GPU type."""

    tenant_id: str
    tenant: str
    day: str
    gpu_type: str
    jobs: int
    gpu_seconds: float
    dollars: float


class UsageLedger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def daily(self, start: str, end: str, tenant_id: str | None = None) -> list[UsageRow]:
        """Billed usage from day ``start`` to day ``end`` (``YYYY-MM-DD``, both included),
        by tenant, day and GPU type; one tenant's with ``tenant_id``."""
        c = t.jobs.c
        gpu_type = func.coalesce(c.gpu_type, "unknown")
        q = (
            select(
                c.tenant_id,
                t.tenants.c.name,
                c.billed_day,
                gpu_type,
                func.count(),
                func.sum(func.coalesce(c.gpu_seconds, 0.0) * func.coalesce(c.gpu_count, 1)),
                func.sum(func.coalesce(c.cost_usd, 0.0)),
            )
            .join(t.tenants, t.tenants.c.id == c.tenant_id)
            .where(
                c.billed_day >= start,
                c.billed_day <= end,
                c.status == JobStatus.COMPLETED.value,
            )
            .group_by(c.tenant_id, t.tenants.c.name, c.billed_day, gpu_type)
            .order_by(c.billed_day, t.tenants.c.name, gpu_type)
        )
        if tenant_id is not None:
            q = q.where(c.tenant_id == tenant_id)
        with read_tx(self.engine) as conn:
            return [
                UsageRow(r[0], r[1], r[2], r[3], int(r[4]), float(r[5] or 0), float(r[6] or 0))
                for r in conn.execute(q).all()
            ]

    def recent_work(self, since: float) -> dict[str, float]:
        """Per tenant: the estimated work (one-GPU seconds) of its jobs started at or after
        ``since``, and of its jobs running now (fair share's usage)."""
        c = t.jobs.c
        work = func.sum(func.coalesce(c.work_s, 0.0))
        started = (c.started_at >= since) & (c.status != JobStatus.QUEUED.value)
        running = (c.status == JobStatus.IN_PROGRESS.value) & (c.started_at < since)
        out: dict[str, float] = {}
        with read_tx(self.engine) as conn:
            for where in (started, running):
                q = select(c.tenant_id, work).where(where).group_by(c.tenant_id)
                for tenant_id, seconds in conn.execute(q).all():
                    out[tenant_id] = out.get(tenant_id, 0.0) + float(seconds or 0.0)
        return out

    def queued_tenants(self, models: Sequence[str]) -> list[str]:
        """The tenants with queued jobs for any of ``models``."""
        c = t.jobs.c
        q = (
            select(c.tenant_id)
            .where(
                c.status == JobStatus.QUEUED.value,
                c.model.in_(list(models)),
                c.deleted_at.is_(None),
            )
            .group_by(c.tenant_id)
        )
        with read_tx(self.engine) as conn:
            return [r[0] for r in conn.execute(q).all()]

    def tenants(self, keys: Iterable[str]) -> dict[str, str]:
        """The tenants whose id or name is among ``keys``: id to name."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        c = t.tenants.c
        q = select(c.id, c.name).where(or_(c.id.in_(wanted), c.name.in_(wanted)))
        with read_tx(self.engine) as conn:
            return {r[0]: r[1] for r in conn.execute(q).all()}
