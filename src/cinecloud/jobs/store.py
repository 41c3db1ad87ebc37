"""The job store: jobs, their events and artifacts, and leases, over SQLAlchemy Core.

Work is leased, not locked: a worker holds a job for ``lease_ttl_s`` and must
extend it; an expired lease returns the job to the queue and counts an attempt.
Every status change goes through :func:`lifecycle.transition` and appends a
``job_events`` row in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx, write_tx
from cinecloud.jobs.heads import tenant_heads
from cinecloud.jobs.lifecycle import EVENT_FOR, TERMINAL, Action, JobStatus, transition
from cinecloud.jobs.records import (
    ArtifactRecord,
    Billing,
    EventRecord,
    JobRecord,
    LeaseLost,
    NewJob,
    NotFound,
    ReusedIdempotencyKey,
    new_id,
)
from cinecloud.jobs.usage import TenantUsage, add_billed, lock_tenant, tenant_usage, utc_day

__all__ = ["Admit", "JobStore", "LeaseOrder"]

Clock = Callable[[], float]
IdFactory = Callable[[str], str]
#: Ranks queued candidates for a leasing worker: ``(candidates, now)`` to job ids, best
#: first (the scheduler's placement policy). Ids not among the candidates are ignored.
LeaseOrder = Callable[[Sequence[JobRecord], float], Sequence[str]]
#: Decides whether a tenant holding :class:`TenantUsage` may add a job; it refuses by
#: raising (the transaction then rolls back and the exception propagates).
Admit = Callable[[TenantUsage], None]


class JobStore:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        ids: IdFactory = new_id,
        max_attempts: int = 3,
        job_ttl_s: float = 7 * 24 * 3600,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.ids = ids
        self.max_attempts = max_attempts
        self.job_ttl_s = job_ttl_s

    # ------------------------------------------------------------ helpers

    def _event(self, conn: Connection, job_id: str, type_: str, data: dict[str, Any]) -> None:
        conn.execute(
            insert(t.job_events).values(
                job_id=job_id, type=type_, data=data, created_at=self.clock()
            )
        )

    def _job_row(self, conn: Connection, job_id: str) -> Any:
        return conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).mappings().first()

    def _artifacts(self, conn: Connection, job_id: str) -> tuple[ArtifactRecord, ...]:
        rows = conn.execute(
            select(t.artifacts).where(t.artifacts.c.job_id == job_id).order_by(t.artifacts.c.id)
        ).mappings()
        return tuple(
            ArtifactRecord(
                job_id=r["job_id"],
                name=r["name"],
                key=r["key"],
                sha256=r["sha256"],
                size=r["size"],
                content_type=r["content_type"],
            )
            for r in rows
        )

    def _record(self, conn: Connection, row: Any) -> JobRecord:
        return JobRecord.from_row(row, self._artifacts(conn, row["id"]))

    def _set_status(
        self,
        conn: Connection,
        row: Any,
        action: Action,
        values: dict[str, Any],
        event: dict[str, Any] | None = None,
    ) -> JobStatus:
        new = transition(row["status"], action)
        conn.execute(
            update(t.jobs).where(t.jobs.c.id == row["id"]).values(status=new.value, **values)
        )
        type_ = "requeued" if action is Action.REQUEUE else EVENT_FOR[new]
        self._event(conn, row["id"], type_, {"status": new.value, **(event or {})})
        return new

    # ------------------------------------------------------------ submit and read

    def create_job(self, new: NewJob, admit: Admit | None = None) -> tuple[JobRecord, bool]:
        """Store a queued job and its first event; returns ``(job, created)``.

        A repeated ``idempotency_key`` returns the first job (``created`` False),
        or raises :class:`ReusedIdempotencyKey` if the request differs.

        ``admit`` (the tenant's quotas) sees the tenant's usage inside the transaction
        that inserts, holding the tenant's lock (:func:`~cinecloud.jobs.usage.lock_tenant`),
        so replicas admitting at once never overshoot. It is not asked about a repeat:
        that job was admitted before.
        """
        if new.idempotency_key:
            existing = self.find_idempotent(new.tenant_id, new.idempotency_key)
            if existing is not None:
                return self._check_same_request(existing, new), False
        job_id = self.ids("video")
        now = self.clock()
        try:
            with write_tx(self.engine) as conn:
                if admit is not None:
                    lock_tenant(conn, new.tenant_id)
                    # a twin of this request may have committed while we waited
                    twin = self._idempotent_row(conn, new)
                    if twin is not None:
                        return self._check_same_request(self._record(conn, twin), new), False
                    admit(tenant_usage(conn, new.tenant_id, now))
                conn.execute(
                    insert(t.jobs).values(
                        id=job_id,
                        tenant_id=new.tenant_id,
                        status=JobStatus.QUEUED.value,
                        model=new.model,
                        prompt=new.prompt,
                        params=new.params,
                        seconds=new.seconds,
                        size=new.size,
                        seed=new.seed,
                        priority=new.priority,
                        parallel=new.parallel,
                        deadline_at=new.deadline_at,
                        work_s=new.work_s,
                        traceparent=new.traceparent,
                        metadata=new.metadata,
                        idempotency_key=new.idempotency_key,
                        request_hash=new.request_hash,
                        created_at=now,
                        attempts=0,
                        max_attempts=self.max_attempts,
                        progress=0,
                    )
                )
                self._event(conn, job_id, "queued", {"status": "queued"})
                row = self._job_row(conn, job_id)
                return JobRecord.from_row(row), True
        except IntegrityError:
            if not new.idempotency_key:
                raise
            existing = self.find_idempotent(new.tenant_id, new.idempotency_key)
            if existing is None:
                raise
            return self._check_same_request(existing, new), False

    def find_idempotent(self, tenant_id: str, key: str) -> JobRecord | None:
        """The job an earlier request with this ``Idempotency-Key`` created, if any."""
        with read_tx(self.engine) as conn:
            row = self._key_row(conn, tenant_id, key)
            return self._record(conn, row) if row is not None else None

    @staticmethod
    def _key_row(conn: Connection, tenant_id: str, key: str) -> Any:
        c = t.jobs.c
        q = select(t.jobs).where(c.tenant_id == tenant_id, c.idempotency_key == key)
        return conn.execute(q).mappings().first()

    def _idempotent_row(self, conn: Connection, new: NewJob) -> Any:
        if not new.idempotency_key:
            return None
        return self._key_row(conn, new.tenant_id, new.idempotency_key)

    @staticmethod
    def _check_same_request(existing: JobRecord, new: NewJob) -> JobRecord:
        if new.request_hash and existing.request_hash and new.request_hash != existing.request_hash:
            raise ReusedIdempotencyKey("Idempotency-Key was already used with a different request")
        return existing

    def get_job(self, job_id: str, tenant_id: str | None = None) -> JobRecord:
        """The job, unless deleted or (with ``tenant_id``) another tenant's."""
        with read_tx(self.engine) as conn:
            row = self._job_row(conn, job_id)
            if row is None or row["deleted_at"] is not None:
                raise NotFound(job_id)
            if tenant_id is not None and row["tenant_id"] != tenant_id:
                raise NotFound(job_id)
            return self._record(conn, row)

    def list_jobs(
        self, tenant_id: str, *, after: str | None, limit: int, order: str
    ) -> tuple[list[JobRecord], bool]:
        c = t.jobs.c
        q = select(t.jobs).where(c.tenant_id == tenant_id, c.deleted_at.is_(None))
        desc = order == "desc"
        if after is not None:
            anchor = self.get_job(after, tenant_id)
            cmp = (
                or_(
                    c.created_at < anchor.created_at,
                    and_(c.created_at == anchor.created_at, c.id < anchor.id),
                )
                if desc
                else or_(
                    c.created_at > anchor.created_at,
                    and_(c.created_at == anchor.created_at, c.id > anchor.id),
                )
            )
            q = q.where(cmp)
        keys = (c.created_at.desc(), c.id.desc()) if desc else (c.created_at, c.id)
        with read_tx(self.engine) as conn:
            rows = conn.execute(q.order_by(*keys).limit(limit + 1)).mappings().all()
            jobs = [self._record(conn, r) for r in rows[:limit]]
        return jobs, len(rows) > limit

    def queue_position(self, job: JobRecord) -> int | None:
        """How many queued jobs run before this one (0 = next), or None if not queued."""
        if job.status != JobStatus.QUEUED:
            return None
        c = t.jobs.c
        queued = c.status == JobStatus.QUEUED.value
        # Three range counts that each walk the (status, priority, created_at) index,
        # rather than one OR that would scan every queued job.
        parts = (
            and_(queued, c.priority > job.priority),
            and_(queued, c.priority == job.priority, c.created_at < job.created_at),
            and_(queued, c.priority == job.priority, c.created_at == job.created_at, c.id < job.id),
        )
        with read_tx(self.engine) as conn:
            return sum(int(conn.execute(select(func.count()).where(p)).scalar_one()) for p in parts)

    def events_after(self, job_id: str, after_id: int, limit: int = 500) -> list[EventRecord]:
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(t.job_events)
                .where(t.job_events.c.job_id == job_id, t.job_events.c.id > after_id)
                .order_by(t.job_events.c.id)
                .limit(limit)
            ).mappings()
            return [
                EventRecord(
                    id=r["id"],
                    job_id=r["job_id"],
                    type=r["type"],
                    data=r["data"],
                    created_at=r["created_at"],
                )
                for r in rows
            ]

    # ------------------------------------------------------------ user actions

    def cancel(self, job_id: str, tenant_id: str) -> JobRecord:
        """Cancel a queued or running job; raises InvalidTransition if finished."""
        with write_tx(self.engine) as conn:
            row = self._job_row(conn, job_id)
            if row is None or row["deleted_at"] is not None or row["tenant_id"] != tenant_id:
                raise NotFound(job_id)
            self._set_status(
                conn,
                row,
                Action.CANCEL,
                {"completed_at": self.clock(), **_CLEAR_LEASE},
            )
            conn.execute(delete(t.artifacts).where(t.artifacts.c.job_id == job_id))
            return self._record(conn, self._job_row(conn, job_id))

    def delete_job(self, job_id: str, tenant_id: str) -> JobRecord:
        """Hide the job; a running one is canceled first. The caller removes its files."""
        with write_tx(self.engine) as conn:
            row = self._job_row(conn, job_id)
            if row is None or row["deleted_at"] is not None or row["tenant_id"] != tenant_id:
                raise NotFound(job_id)
            if row["status"] not in TERMINAL:
                self._set_status(
                    conn, row, Action.CANCEL, {"completed_at": self.clock(), **_CLEAR_LEASE}
                )
            record = self._record(conn, self._job_row(conn, job_id))
            conn.execute(delete(t.artifacts).where(t.artifacts.c.job_id == job_id))
            conn.execute(
                update(t.jobs).where(t.jobs.c.id == job_id).values(deleted_at=self.clock())
            )
            self._event(conn, job_id, "deleted", {"status": row["status"]})
            return record

    # ------------------------------------------------------------ worker side

    def lease(
        self,
        worker_id: str,
        models: Sequence[str],
        *,
        ttl_s: float,
        max_jobs: int = 1,
        width: int = 1,
        order: LeaseOrder | None = None,
        candidates: int = 32,
        tenants: Sequence[str] = (),
        per_tenant: int = 4,
    ) -> list[JobRecord]:
        """Claim up to ``max_jobs`` queued jobs for ``worker_id``, a worker of ``width`` ranks.

        Only jobs that asked for no parallel degree or for ``width`` (and not past a
        deadline) qualify. Without ``order`` the first by priority then age are claimed;
        with it, up to ``candidates`` jobs by priority, as many of the oldest and
        ``per_tenant`` of each of ``tenants`` (fair share's) are read and ``order`` picks
        among them. PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers
        never block one another. SQLite: the whole claim is one ``BEGIN IMMEDIATE`` write.
        """
        if not models or max_jobs < 1:
            return []
        c = t.jobs.c
        waiting = select(t.jobs).where(
            c.status == JobStatus.QUEUED.value,
            c.model.in_(list(models)),
            c.deleted_at.is_(None),
            or_(c.parallel.is_(None), c.parallel == width),
            or_(c.deadline_at.is_(None), c.deadline_at > self.clock()),
        )
        queued = waiting.with_for_update(skip_locked=True)
        by_priority = queued.order_by(c.priority.desc(), c.created_at, c.id)
        leased: list[JobRecord] = []
        with write_tx(self.engine) as conn:
            now = self.clock()
            if order is None:
                rows: list[Any] = list(conn.execute(by_priority.limit(max_jobs)).mappings())
            else:
                top = conn.execute(by_priority.limit(candidates)).mappings()
                found: dict[str, Any] = {r["id"]: r for r in top}
                seen = {r["tenant_id"] for r in found.values()}  # with their heads among them
                oldest = queued.order_by(c.created_at, c.id).limit(candidates)
                found.update((r["id"], r) for r in conn.execute(oldest).mappings())
                missing = [x for x in tenants if x not in seen]
                found.update(tenant_heads(conn, waiting, missing, per_tenant))
                ranked = order([JobRecord.from_row(r) for r in found.values()], now)
                rows = [found[i] for i in ranked if i in found][:max_jobs]
            for row in rows:
                leased.append(self._claim(conn, row, worker_id, now, ttl_s))
        return leased

    def _claim(
        self, conn: Connection, row: Any, worker_id: str, now: float, ttl_s: float
    ) -> JobRecord:
        attempt = row["attempts"] + 1
        self._set_status(
            conn,
            row,
            Action.LEASE,
            {
                "lease_id": self.ids("lse"),
                "lease_owner": worker_id,
                "lease_expires_at": now + ttl_s,
                "attempts": attempt,
                "started_at": now,
                "stage": "queued",
                "error_code": None,
                "error_message": None,
            },
            {"worker_id": worker_id, "attempt": attempt},
        )
        return self._record(conn, self._job_row(conn, row["id"]))

    def _held(self, conn: Connection, job_id: str, lease_id: str) -> Any:
        row = self._job_row(conn, job_id)
        if (
            row is None
            or row["lease_id"] != lease_id
            or row["status"] != JobStatus.IN_PROGRESS.value
            or row["deleted_at"] is not None
        ):
            raise LeaseLost(f"lease {lease_id} on {job_id} is no longer held")
        return row

    def check_lease(self, job_id: str, lease_id: str) -> JobRecord:
        with read_tx(self.engine) as conn:
            return JobRecord.from_row(self._held(conn, job_id, lease_id))

    def extend_leases(self, pairs: Sequence[tuple[str, str]], ttl_s: float) -> list[str]:
        """Extend each held lease; returns the job ids whose lease is lost."""
        if not pairs:
            return []
        c = t.jobs.c
        # One statement for all of them: a busy worker renews a few dozen leases several
        # times a second, and one UPDATE each was a tenth of the server's time per job.
        # (No RETURNING: SQLite has it only from 3.35; the rare lost lease is looked up.)
        wanted = sorted(set(pairs))
        held = and_(
            tuple_(c.id, c.lease_id).in_(wanted),
            c.status == JobStatus.IN_PROGRESS.value,
            c.deleted_at.is_(None),
        )
        with write_tx(self.engine) as conn:
            renewed = conn.execute(
                update(t.jobs).where(held).values(lease_expires_at=self.clock() + ttl_s)
            ).rowcount
            if renewed == len(wanted):
                return []
            kept = {(r[0], r[1]) for r in conn.execute(select(c.id, c.lease_id).where(held))}
        return [job_id for job_id, lease_id in pairs if (job_id, lease_id) not in kept]

    def progress(
        self, job_id: str, lease_id: str, events: Sequence[dict[str, Any]], ttl_s: float
    ) -> None:
        """Record progress events from the worker and extend its lease."""
        with write_tx(self.engine) as conn:
            self._held(conn, job_id, lease_id)
            self._progress(conn, job_id, events, ttl_s)

    def progress_many(
        self, items: Sequence[tuple[str, str, Sequence[dict[str, Any]]]], ttl_s: float
    ) -> list[str]:
        """Several held jobs' ``(job_id, lease_id, events)`` as :meth:`progress` records
        each, in one transaction (a batch's jobs report each step together); returns the
        job ids whose lease is lost, whose events are dropped."""
        lost: list[str] = []
        with write_tx(self.engine) as conn:
            for job_id, lease_id, events in items:
                try:
                    self._held(conn, job_id, lease_id)
                except LeaseLost:
                    lost.append(job_id)
                    continue
                self._progress(conn, job_id, events, ttl_s)
        return lost

    def _progress(
        self, conn: Connection, job_id: str, events: Sequence[dict[str, Any]], ttl_s: float
    ) -> None:
        values: dict[str, Any] = {"lease_expires_at": self.clock() + ttl_s}
        for ev in events:
            self._event(conn, job_id, str(ev.get("type", "progress")), dict(ev))
            for key in ("stage", "step", "total_steps", "eta_s"):
                if key in ev:
                    values[key] = ev[key]
            if "progress" in ev:
                values["progress"] = max(0, min(99, int(ev["progress"])))
        conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))

    def complete(
        self,
        job_id: str,
        lease_id: str,
        *,
        artifacts: Sequence[ArtifactRecord],
        timings: dict[str, float],
        gpu_seconds: float,
        engine: dict[str, Any],
        billing: Billing | None = None,
        qc: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Mark the job completed, billed per ``billing`` on the UTC day it completes.
        A repeat by the same lease returns the job again."""
        with write_tx(self.engine) as conn:
            row = self._job_row(conn, job_id)
            if (
                row is not None
                and row["lease_id"] == lease_id
                and row["status"] == JobStatus.COMPLETED.value
            ):
                return self._record(conn, row)
            row = self._held(conn, job_id, lease_id)
            now = self.clock()
            full = dict(timings)
            full["queue_wait"] = max(0.0, row["started_at"] - row["created_at"])
            full["total"] = max(0.0, now - row["created_at"])
            for art in artifacts:
                conn.execute(
                    delete(t.artifacts).where(
                        t.artifacts.c.job_id == job_id, t.artifacts.c.name == art.name
                    )
                )
                conn.execute(
                    insert(t.artifacts).values(
                        job_id=job_id,
                        name=art.name,
                        key=art.key,
                        sha256=art.sha256,
                        size=art.size,
                        content_type=art.content_type,
                        created_at=now,
                    )
                )
            self._set_status(
                conn,
                row,
                Action.COMPLETE,
                {
                    "completed_at": now,
                    "expires_at": now + self.job_ttl_s,
                    "progress": 100,
                    "stage": "done",
                    "timings": full,
                    "gpu_seconds": gpu_seconds,
                    "engine": engine,
                    "qc": qc,
                    "lease_expires_at": None,
                    "eta_s": 0.0,
                    **(billing.columns(now) if billing else {}),
                },
                {"timings": full},
            )
            if billing is not None:
                billed = gpu_seconds * billing.gpu_count
                add_billed(conn, row["tenant_id"], utc_day(now), billed)
            return self._record(conn, self._job_row(conn, job_id))

    def add_timing(self, job_id: str, name: str, seconds: float) -> None:
        """Record one more stage time on a job (e.g. ``cdn_warm``, measured after
        completion); a job deleted meanwhile is left alone."""
        with write_tx(self.engine) as conn:
            row = self._job_row(conn, job_id)
            if row is None:
                return
            timings = {**(row["timings"] or {}), name: seconds}
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(timings=timings))

    def fail(
        self, job_id: str, lease_id: str, *, code: str, message: str, retryable: bool
    ) -> JobRecord:
        """Fail the attempt: re-queue if retryable and attempts remain, else fail the job."""
        with write_tx(self.engine) as conn:
            row = self._job_row(conn, job_id)
            if row is not None and row["lease_id"] == lease_id and row["status"] in TERMINAL:
                return self._record(conn, row)
            row = self._held(conn, job_id, lease_id)
            self._end_attempt(conn, row, code, message, retryable)
            return self._record(conn, self._job_row(conn, job_id))

    def _end_attempt(
        self, conn: Connection, row: Any, code: str, message: str, retryable: bool
    ) -> None:
        err = {"error_code": code, "error_message": message}
        if retryable and row["attempts"] < row["max_attempts"]:
            self._set_status(
                conn,
                row,
                Action.REQUEUE,
                {**_CLEAR_LEASE, **err, "stage": None, "step": None, "progress": 0, "eta_s": None},
                {"code": code, "message": message, "attempt": row["attempts"]},
            )
        else:
            if retryable:
                message = f"{message} (gave up after {row['attempts']} attempts)"
            self._set_status(
                conn,
                row,
                Action.FAIL,
                {
                    **_CLEAR_LEASE,
                    "error_code": code,
                    "error_message": message,
                    "completed_at": self.clock(),
                },
                {"code": code, "message": message},
            )

    def expire_leases(self) -> list[str]:
        """Return jobs whose lease ran out to the queue (or fail them after the last attempt)."""
        c = t.jobs.c
        with write_tx(self.engine) as conn:
            now = self.clock()
            rows = (
                conn.execute(
                    select(t.jobs)
                    .where(c.status == JobStatus.IN_PROGRESS.value, c.lease_expires_at < now)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .all()
            )
            for row in rows:
                self._end_attempt(
                    conn, row, "lease_expired", "the worker stopped renewing its lease", True
                )
            return [r["id"] for r in rows]

    # ------------------------------------------------------------ retention

    def past_retention(self, limit: int = 100) -> list[JobRecord]:
        """Jobs past their ``expires_at`` that still have files: retention's work list."""
        c = t.jobs.c
        has_files = select(t.artifacts.c.id).where(t.artifacts.c.job_id == c.id).exists()
        q = (
            select(t.jobs)
            .where(c.expires_at.is_not(None), c.expires_at <= self.clock(), has_files)
            .order_by(c.expires_at)
            .limit(limit)
        )
        with read_tx(self.engine) as conn:
            return [self._record(conn, r) for r in conn.execute(q).mappings().all()]

    def drop_files(self, job_id: str) -> None:
        """Forget the job's files once retention removed them (an ``expired`` event)."""
        with write_tx(self.engine) as conn:
            gone = conn.execute(delete(t.artifacts).where(t.artifacts.c.job_id == job_id))
            if gone.rowcount:
                self._event(conn, job_id, "expired", {})

    # ------------------------------------------------------------ stats

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (status, model) for the live statuses."""
        c = t.jobs.c
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(c.status, c.model, func.count())
                .where(c.status.in_([JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value]))
                .group_by(c.status, c.model)
            ).all()
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def has_queued(self, models: Sequence[str]) -> bool:
        c = t.jobs.c
        with read_tx(self.engine) as conn:
            row = conn.execute(
                select(c.id)
                .where(
                    c.status == JobStatus.QUEUED.value,
                    c.model.in_(list(models)),
                    c.deleted_at.is_(None),
                )
                .limit(1)
            ).first()
        return row is not None


_CLEAR_LEASE: dict[str, Any] = {"lease_expires_at": None, "lease_owner": None}
