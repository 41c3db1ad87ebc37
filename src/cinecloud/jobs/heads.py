"""The queue heads of chosen tenants, for a lease: what fair share must see.

A lease reads its candidates by priority and by age; a tenant whose jobs are all
younger and no higher than another tenant's backlog is among neither, so fair share
names the tenants it wants and this reads each one's first jobs too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, select, union_all

from cinecloud.jobs import tables as t

__all__ = ["tenant_heads"]


def tenant_heads(
    conn: Connection, queued: Select[Any], tenants: Sequence[str], per_tenant: int
) -> dict[str, Any]:
    """The first ``per_tenant`` of ``queued`` (an unlocked select of queued jobs) of each
    of ``tenants``, by priority then age, locked ``FOR UPDATE SKIP LOCKED``: one read of
    their ids (a UNION of per-tenant LIMITs, which PostgreSQL will not lock), then one
    locking read of those rows. Rows another leaser holds are left out."""
    if not tenants:
        return {}
    c = t.jobs.c
    first = (c.priority.desc(), c.created_at, c.id)
    ids_only = queued.with_only_columns(c.id)
    heads = [
        ids_only.where(c.tenant_id == tenant).order_by(*first).limit(per_tenant).subquery()
        for tenant in tenants
    ]
    parts = [select(head.c.id) for head in heads]
    ids = [r[0] for r in conn.execute(union_all(*parts) if len(parts) > 1 else parts[0])]
    if not ids:
        return {}
    locked = queued.where(c.id.in_(ids)).with_for_update(skip_locked=True)
    return {r["id"]: r for r in conn.execute(locked).mappings()}
