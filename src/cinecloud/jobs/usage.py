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

from sqlalchemy import Connection, Engine, func, or_, select

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx
from cinecloud.jobs.lifecycle import JobStatus

__all__ = ["FairInputs", "UsageLedger", "UsageRow"]


@dataclass(frozen=True)
class FairInputs:
    """Fair share's view of the jobs table at one lease.

    ``usage``: per tenant, the estimated work (one-GPU seconds) of its jobs started
    since the window began, and of its jobs running now; ``queued_tenants``: the tenants
    with jobs waiting; ``tenants``: id to name of the tenants asked about.
    """

    usage: dict[str, float]
    queued_tenants: list[str]
    tenants: dict[str, str]


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

    def fair_inputs(
        self, models: Sequence[str], since: float, names: Iterable[str] = ()
    ) -> FairInputs:
        """What fair share needs for one lease, in one read: each tenant's recent work,
        the tenants with queued jobs for ``models``, and the tenants named in ``names``."""
        c = t.jobs.c
        recent = ((c.started_at >= since) & (c.status != JobStatus.QUEUED.value)) | (
            c.status == JobStatus.IN_PROGRESS.value
        )
        work = select(c.tenant_id, func.sum(func.coalesce(c.work_s, 0.0))).where(recent)
        queued = select(c.tenant_id).where(
            c.status == JobStatus.QUEUED.value,
            c.model.in_(list(models)),
            c.deleted_at.is_(None),
        )
        with read_tx(self.engine) as conn:
            usage = {
                r[0]: float(r[1] or 0.0) for r in conn.execute(work.group_by(c.tenant_id)).all()
            }
            waiting = [r[0] for r in conn.execute(queued.group_by(c.tenant_id)).all()]
            named = self._tenants(conn, names)
        return FairInputs(usage=usage, queued_tenants=waiting, tenants=named)

    def tenants(self, keys: Iterable[str]) -> dict[str, str]:
        """The tenants whose id or name is among ``keys``: id to name."""
        with read_tx(self.engine) as conn:
            return self._tenants(conn, keys)

    @staticmethod
    def _tenants(conn: Connection, keys: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        c = t.tenants.c
        q = select(c.id, c.name).where(or_(c.id.in_(wanted), c.name.in_(wanted)))
        return {r[0]: r[1] for r in conn.execute(q).all()}
