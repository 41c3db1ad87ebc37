"""Tenants, API keys and registered workers."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx, write_tx
from cinecloud.jobs.records import ApiKeyRecord, TenantRecord, WorkerRecord, hash_key, new_id

__all__ = ["AccountStore", "WorkerStore"]

KEY_PREFIX = "cc-"


class AccountStore:
    def __init__(
        self, engine: Engine, *, clock: Callable[[], float], ids: Callable[[str], str] = new_id
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.ids = ids

    def ensure_tenant(self, name: str) -> TenantRecord:
        """The tenant called ``name``, created if missing."""
        with read_tx(self.engine) as conn:
            row = conn.execute(select(t.tenants).where(t.tenants.c.name == name)).mappings().first()
        if row is not None:
            return TenantRecord(**row)
        try:
            with write_tx(self.engine) as conn:
                tid = self.ids("ten")
                now = self.clock()
                conn.execute(insert(t.tenants).values(id=tid, name=name, created_at=now))
                return TenantRecord(id=tid, name=name, created_at=now)
        except IntegrityError:
            return self.ensure_tenant(name)

    def create_key(
        self, tenant_id: str, *, admin: bool = False, name: str = ""
    ) -> tuple[str, ApiKeyRecord]:
        """A new key; the plaintext is returned once and only its hash is stored."""
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        rec = ApiKeyRecord(
            id=self.ids("key"),
            tenant_id=tenant_id,
            prefix=plaintext[:10],
            name=name,
            is_admin=admin,
            created_at=self.clock(),
        )
        with write_tx(self.engine) as conn:
            conn.execute(
                insert(t.api_keys).values(
                    id=rec.id,
                    tenant_id=tenant_id,
                    key_hash=hash_key(plaintext),
                    prefix=rec.prefix,
                    name=name,
                    is_admin=admin,
                    created_at=rec.created_at,
                )
            )
        return plaintext, rec

    def authenticate(self, plaintext: str) -> ApiKeyRecord | None:
        c = t.api_keys.c
        with read_tx(self.engine) as conn:
            row = (
                conn.execute(
                    select(c.id, c.tenant_id, c.prefix, c.name, c.is_admin, c.created_at).where(
                        c.key_hash == hash_key(plaintext), c.revoked_at.is_(None)
                    )
                )
                .mappings()
                .first()
            )
        return ApiKeyRecord(**row) if row is not None else None

    def list_keys(self, tenant_id: str | None = None) -> list[tuple[ApiKeyRecord, str]]:
        """Keys (with their tenant's name), newest last; revoked keys are left out."""
        c = t.api_keys.c
        q = (
            select(c.id, c.tenant_id, c.prefix, c.name, c.is_admin, c.created_at, t.tenants.c.name)
            .join(t.tenants, t.tenants.c.id == c.tenant_id)
            .where(c.revoked_at.is_(None))
            .order_by(c.created_at)
        )
        if tenant_id is not None:
            q = q.where(c.tenant_id == tenant_id)
        with read_tx(self.engine) as conn:
            return [(ApiKeyRecord(*r[:6]), r[6]) for r in conn.execute(q).all()]

    def revoke_key(self, key_id: str) -> bool:
        with write_tx(self.engine) as conn:
            res = conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )
            return bool(res.rowcount)

    def count_keys(self) -> int:
        with read_tx(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(t.api_keys)).scalar_one())


class WorkerStore:
    def __init__(
        self, engine: Engine, *, clock: Callable[[], float], ids: Callable[[str], str] = new_id
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.ids = ids

    def register(self, worker_id: str | None, name: str, capabilities: dict[str, Any]) -> str:
        now = self.clock()
        with write_tx(self.engine) as conn:
            if worker_id:
                res = conn.execute(
                    update(t.workers)
                    .where(t.workers.c.id == worker_id)
                    .values(name=name, capabilities=capabilities, status="idle", last_seen_at=now)
                )
                if res.rowcount:
                    return worker_id
            wid = worker_id or self.ids("wkr")
            conn.execute(
                insert(t.workers).values(
                    id=wid,
                    name=name,
                    capabilities=capabilities,
                    status="idle",
                    registered_at=now,
                    last_seen_at=now,
                )
            )
            return wid

    def touch(self, worker_id: str, status: str, gpu_stats: dict[str, Any] | None = None) -> bool:
        """Mark the worker seen; ``gpu_stats`` (its heartbeat's GPU sample) replaces the
        last one when given."""
        values: dict[str, Any] = {"status": status, "last_seen_at": self.clock()}
        if gpu_stats is not None:
            values["gpu_stats"] = gpu_stats
        with write_tx(self.engine) as conn:
            res = conn.execute(
                update(t.workers).where(t.workers.c.id == worker_id).values(**values)
            )
            return bool(res.rowcount)

    def get(self, worker_id: str) -> WorkerRecord | None:
        with read_tx(self.engine) as conn:
            row = conn.execute(select(t.workers).where(t.workers.c.id == worker_id)).mappings()
            found = row.first()
        return WorkerRecord(**found) if found is not None else None

    def note_loaded(self, worker_id: str, loaded: list[str]) -> None:
        """Keep the models a worker holds now (its lease calls say) in its capabilities,
        where other workers' leases look for who holds what."""
        known = self.get(worker_id)
        if known is None or known.capabilities.get("loaded") == loaded:
            return  # the common case: nothing changed, nothing written
        caps = {**known.capabilities, "loaded": loaded}
        with write_tx(self.engine) as conn:
            conn.execute(
                update(t.workers).where(t.workers.c.id == worker_id).values(capabilities=caps)
            )

    def active(self, within_s: float) -> list[WorkerRecord]:
        cutoff = self.clock() - within_s
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(t.workers).where(t.workers.c.last_seen_at >= cutoff)
            ).mappings()
            return [WorkerRecord(**r) for r in rows]
