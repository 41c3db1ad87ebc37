"""Usage read from the jobs table: what tenants ran, per day (billing), lately
(fair share), and what they hold now (quotas).

A completed job carries its bill (``gpu_type``, ``gpu_count``, ``spot``, ``cost_usd``
and the UTC ``billed_day`` it completed on; see :class:`~cinecloud.jobs.records.Billing`).
Its GPU-seconds are the engine's wall time times the GPUs it held. Jobs that did not
complete (failed, including by deadline, or canceled) carry no bill.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, Engine, Select, bindparam, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx
from cinecloud.jobs.lifecycle import JobStatus

__all__ = [
    "FairInputs",
    "TenantUsage",
    "UsageLedger",
    "UsageRow",
    "add_billed",
    "lock_tenant",
    "tenant_usage",
    "utc_day",
]


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


@dataclass(frozen=True)
class TenantUsage:
    """What one tenant holds at one moment, for its quotas.

    ``active_jobs``: its queued and running jobs; ``soonest_eta_s``: the smallest ETA of
    its running jobs (None: none has one); ``gpu_seconds``: GPU-seconds billed to it on
    UTC day ``day`` (its completed jobs' GPU-seconds times GPUs, as ``GET /v1/usage``
    counts them, kept in ``tenant_days``); ``now``: when.
    """

    active_jobs: int
    soonest_eta_s: float | None
    gpu_seconds: float
    day: str
    now: float


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).date().isoformat()


# The advisory locks admitting a tenant's jobs: (this, hashtext(tenant id)). Two-key
# locks never meet the one-key ones (leader, migrations).
_ADMIT_LOCKS = 0x63716F74  # "cqot"


def lock_tenant(conn: Connection, tenant_id: str) -> None:
    """Until the transaction ends, hold the lock that writers admitting this tenant's
    jobs take turns on: a transaction-level advisory lock on PostgreSQL (no row is
    written; two tenants whose ids hash alike merely share one). SQLite's write
    transactions already run one at a time, so there it does nothing."""
    if conn.dialect.name != "sqlite":
        conn.execute(_LOCK, {"space": _ADMIT_LOCKS, "tenant": tenant_id})


def _usage_query() -> Select[Any]:
    """One statement, built once (it runs for every job submitted): three scalar
    subqueries that each walk an index: the active jobs (bounded by the quota), the
    running ones, and one ``tenant_days`` row."""
    c, d = t.jobs.c, t.tenant_days.c
    tenant: BindParameter[str] = bindparam("tenant")
    running = JobStatus.IN_PROGRESS.value
    active = (
        select(func.count())
        .select_from(t.jobs)
        .where(c.tenant_id == tenant, c.status.in_([JobStatus.QUEUED.value, running]))
    )
    eta = select(func.min(c.eta_s)).where(c.tenant_id == tenant, c.status == running)
    billed = select(d.gpu_seconds).where(d.tenant_id == tenant, d.day == bindparam("day"))
    return select(active.scalar_subquery(), eta.scalar_subquery(), billed.scalar_subquery())


_USAGE = _usage_query()
_LOCK = text("SELECT pg_advisory_xact_lock(:space, hashtext(:tenant))")


def tenant_usage(conn: Connection, tenant_id: str, now: float) -> TenantUsage:
    """The tenant's :class:`TenantUsage` at ``now``."""
    day = utc_day(now)
    row = conn.execute(_USAGE, {"tenant": tenant_id, "day": day}).one()
    active, eta, billed = row[0], row[1], row[2]
    return TenantUsage(
        int(active), None if eta is None else float(eta), float(billed or 0.0), day, now
    )


def add_billed(conn: Connection, tenant_id: str, day: str, gpu_seconds: float) -> None:
    """Add one completed job's billed GPU-seconds to the tenant's ``day``."""
    d = t.tenant_days
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = upsert(d).values(tenant_id=tenant_id, day=day, gpu_seconds=gpu_seconds, jobs=1)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[d.c.tenant_id, d.c.day],
            set_={"gpu_seconds": d.c.gpu_seconds + stmt.excluded.gpu_seconds, "jobs": d.c.jobs + 1},
        )
    )


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

    def holding(self, tenant_id: str, now: float) -> TenantUsage:
        """What the tenant holds at ``now`` (a plain read: the quotas' early look)."""
        with read_tx(self.engine) as conn:
            return tenant_usage(conn, tenant_id, now)

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
