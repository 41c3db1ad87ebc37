"""Webhook endpoints, deliveries and their attempts, over SQLAlchemy Core.

The delivery loop works in two steps, both durable:

1. **Fan-out** reads ``job_events`` past a cursor and makes one ``webhook_deliveries``
   row (a message) per event and subscribed endpoint. The unique (endpoint, event) pair
   makes it idempotent, so several replicas may run it, and events from the last
   ``grace_s`` seconds are read again on each pass: on PostgreSQL an event's id is taken
   before its transaction commits, so a lower id can appear after a higher one was read.
2. **Claim** leases due messages (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), at most one
   per (endpoint, job) at a time and in event order: a job's next event waits until the
   one before it is delivered or given up. Each HTTP attempt is a ``webhook_attempts``
   row; the message goes back to ``pending`` with its next time, or ends ``delivered``
   or ``failed`` (attempts spent; a replay makes it pending again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx, write_tx
from cinecloud.jobs.records import NotFound, new_id

__all__ = [
    "DEFAULT_EVENTS",
    "EVENT_TYPES",
    "AttemptRecord",
    "DeliveryRecord",
    "DueDelivery",
    "EndpointRecord",
    "WebhookStore",
    "event_payload",
]

#: The job events a webhook can carry (``job_events.type``), sent as ``video.<type>``.
EVENT_TYPES = ("started", "progress", "completed", "failed", "canceled")
#: What an endpoint gets when it names no events: progress is opt-in (it is chatty).
DEFAULT_EVENTS = ("started", "completed", "failed", "canceled")
_OPEN = ("pending", "sending")
_CURSOR = "fanout"
#: With no endpoint, how often fanout moves its cursor past the settled events (seconds).
IDLE_ADVANCE_S = 10.0
_BATCH = 1000


@dataclass(frozen=True)
class EndpointRecord:
    id: str
    tenant_id: str
    url: str
    events: tuple[str, ...]
    description: str
    created_at: float
    secret: str
    job_id: str | None = None
    disabled_at: float | None = None


@dataclass(frozen=True)
class DueDelivery:
    """A claimed message, with what sending it needs; ``attempt`` is this try's number."""

    id: str
    job_id: str
    event_id: int
    url: str
    secret: str
    payload: str
    attempt: int


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    started_at: float
    duration_s: float
    address: str | None
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    id: str
    endpoint_id: str
    url: str
    job_id: str
    event_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: float | None
    created_at: float
    delivered_at: float | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: tuple[AttemptRecord, ...] = ()


def event_payload(event: Any) -> str:
    """The Standard Webhooks body of one job event (a ``job_events`` row with its job's
    ``model`` and ``metadata``): ``{"type", "timestamp", "data"}``."""
    data = {k: v for k, v in dict(event["data"]).items() if k not in ("type", "worker_id")}
    if event["type"] == "progress":
        data.setdefault("status", "in_progress")
    body = {
        "type": f"video.{event['type']}",
        "timestamp": datetime.fromtimestamp(event["created_at"], tz=UTC).isoformat(),
        "data": {
            "id": event["job_id"],
            "object": "video",
            "model": event["model"],
            "metadata": event["metadata"],
            "event_id": event["id"],
            **data,
        },
    }
    return json.dumps(body, separators=(",", ":"))


def _endpoint(row: Any) -> EndpointRecord:
    return EndpointRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        events=tuple(row["events"]),
        description=row["description"],
        created_at=row["created_at"],
        secret=row["secret"],
        job_id=row["job_id"],
        disabled_at=row["disabled_at"],
    )


class WebhookStore:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float],
        ids: Callable[[str], str] = new_id,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.ids = ids
        self._idle_advanced_at = -math.inf  # when fanout last moved the cursor for no one
        self._idle = False  # the last fanout found no enabled endpoint

    # ------------------------------------------------------------ endpoints

    def create_endpoint(
        self,
        tenant_id: str,
        url: str,
        events: Sequence[str],
        secret: str,
        *,
        description: str = "",
        job_id: str | None = None,
    ) -> EndpointRecord:
        rec = EndpointRecord(
            id=self.ids("whe"),
            tenant_id=tenant_id,
            url=url,
            events=tuple(events),
            description=description,
            created_at=self.clock(),
            secret=secret,
            job_id=job_id,
        )
        with write_tx(self.engine) as conn:
            conn.execute(
                insert(t.webhook_endpoints).values(
                    id=rec.id,
                    tenant_id=tenant_id,
                    job_id=job_id,
                    url=url,
                    secret=secret,
                    events=list(rec.events),
                    description=description,
                    created_at=rec.created_at,
                )
            )
        return rec

    def list_endpoints(self, tenant_id: str) -> list[EndpointRecord]:
        """The tenant's registered endpoints (not the per-request ones), oldest first."""
        c = t.webhook_endpoints.c
        q = (
            select(t.webhook_endpoints)
            .where(c.tenant_id == tenant_id, c.job_id.is_(None), c.disabled_at.is_(None))
            .order_by(c.created_at, c.id)
        )
        with read_tx(self.engine) as conn:
            return [_endpoint(r) for r in conn.execute(q).mappings()]

    def get_endpoint(self, tenant_id: str, endpoint_id: str) -> EndpointRecord:
        c = t.webhook_endpoints.c
        q = select(t.webhook_endpoints).where(
            c.id == endpoint_id, c.tenant_id == tenant_id, c.disabled_at.is_(None)
        )
        with read_tx(self.engine) as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound(endpoint_id)
        return _endpoint(row)

    def disable_endpoint(self, tenant_id: str, endpoint_id: str) -> None:
        """Stop the endpoint; its messages not yet delivered are canceled."""
        c = t.webhook_endpoints.c
        with write_tx(self.engine) as conn:
            res = conn.execute(
                update(t.webhook_endpoints)
                .where(c.id == endpoint_id, c.tenant_id == tenant_id, c.disabled_at.is_(None))
                .values(disabled_at=self.clock())
            )
            if not res.rowcount:
                raise NotFound(endpoint_id)
            d = t.webhook_deliveries.c
            conn.execute(
                update(t.webhook_deliveries)
                .where(d.endpoint_id == endpoint_id, d.status.in_(_OPEN))
                .values(status="canceled", locked_until=None)
            )

    def request_secret(self, tenant_id: str, make: Callable[[], str]) -> str:
        """The tenant's secret for per-request ``webhook_url``s, made on first use."""
        s = t.webhook_secrets.c
        with read_tx(self.engine) as conn:
            found = conn.execute(select(s.secret).where(s.tenant_id == tenant_id)).scalar()
        if found is not None:
            return str(found)
        try:
            with write_tx(self.engine) as conn:
                secret = make()
                conn.execute(
                    insert(t.webhook_secrets).values(
                        tenant_id=tenant_id, secret=secret, created_at=self.clock()
                    )
                )
                return secret
        except IntegrityError:  # made meanwhile by another request
            return self.request_secret(tenant_id, make)

    # ------------------------------------------------------------ fan-out

    def fanout(self, grace_s: float) -> int:
        """Make the messages for new job events; returns how many were made.

        With no endpoint at all (none registered, no job with a ``webhook_url``) there is
        nothing to make: the events are not read, and the cursor moves past the settled
        ones at most every :data:`IDLE_ADVANCE_S` (a pass per burst of job events would
        otherwise write the cursor several times a second for no one). The cursor never
        passes an event newer than ``grace_s``, as on the busy path, and a tenant's
        endpoint that appears meanwhile gets no event from before it
        (:meth:`_messages`), so the idle path skips no message: it only changes how far
        the next pass reads. (A job's own endpoint, from its ``webhook_url``, is stored
        just after the job, well within ``grace_s`` of its first events.)"""
        now = self.clock()
        with read_tx(self.engine) as conn:
            cursor = conn.execute(
                select(t.webhook_cursor.c.event_id).where(t.webhook_cursor.c.name == _CURSOR)
            ).scalar()
            after = int(cursor or 0)
            self._idle = not self._any_endpoint(conn)
        if self._idle:
            self._pass_over(after, now - grace_s, now)
            return 0
        with read_tx(self.engine) as conn:
            tenants = self._tenant_endpoints(conn)
            events = self._events_after(conn, after, tenants)
            if not events:
                return 0
            per_job = self._job_endpoints(conn, {e["job_id"] for e in events})
            rows = self._messages(conn, events, tenants, per_job, now)
        settled = [e["id"] for e in events if e["created_at"] < now - grace_s]
        recent = [e["id"] for e in events if e["created_at"] >= now - grace_s]
        upto = (min(recent) - 1) if recent else max(settled)
        if rows or upto > after:
            with write_tx(self.engine) as conn:
                if rows:
                    conn.execute(self._insert_ignore(conn), rows)
                self._advance(conn, after, upto, now)
        return len(rows)

    def _pass_over(self, after: int, settled_before: float, now: float) -> None:
        """With no endpoint: move the cursor past the settled events, at most every
        :data:`IDLE_ADVANCE_S`."""
        if now - self._idle_advanced_at < IDLE_ADVANCE_S:
            return
        self._idle_advanced_at = now
        with read_tx(self.engine) as conn:
            upto = self._settled_upto(conn, after, settled_before)
        if upto > after:
            with write_tx(self.engine) as conn:
                self._advance(conn, after, upto, now)

    def _any_endpoint(self, conn: Connection) -> bool:
        c = t.webhook_endpoints.c
        q = select(c.id).where(c.disabled_at.is_(None)).limit(1)
        return conn.execute(q).first() is not None

    def _settled_upto(self, conn: Connection, after: int, settled_before: float) -> int:
        """The last event id before the first one newer than ``settled_before`` (events
        of one moment may commit out of id order), or the last event if none is."""
        e = t.job_events.c
        newer = e.id > after
        first_recent = conn.execute(
            select(func.min(e.id)).where(newer, e.created_at >= settled_before)
        ).scalar()
        if first_recent is not None:
            return int(first_recent) - 1
        return int(conn.execute(select(func.max(e.id)).where(newer)).scalar() or after)

    def _tenant_endpoints(self, conn: Connection) -> dict[str, list[Any]]:
        c = t.webhook_endpoints.c
        rows = conn.execute(
            select(c.id, c.tenant_id, c.events, c.created_at).where(
                c.job_id.is_(None), c.disabled_at.is_(None)
            )
        ).mappings()
        found: dict[str, list[Any]] = {}
        for r in rows:
            found.setdefault(r["tenant_id"], []).append(r)
        return found

    def _events_after(
        self, conn: Connection, after: int, tenants: dict[str, list[Any]]
    ) -> list[Any]:
        e, j = t.job_events.c, t.jobs.c
        chatty = any("progress" in r["events"] for rs in tenants.values() for r in rs)
        types = [x for x in EVENT_TYPES if chatty or x != "progress"]
        q = (
            select(t.job_events, j.tenant_id, j.model, j.metadata)
            .join(t.jobs, t.jobs.c.id == e.job_id)
            .where(e.id > after, e.type.in_(types))
            .order_by(e.id)
            .limit(_BATCH)
        )
        return list(conn.execute(q).mappings().all())

    def _job_endpoints(self, conn: Connection, job_ids: set[str]) -> dict[str, list[Any]]:
        c = t.webhook_endpoints.c
        rows = conn.execute(
            select(c.id, c.job_id, c.events).where(
                c.job_id.in_(sorted(job_ids)), c.disabled_at.is_(None)
            )
        ).mappings()
        found: dict[str, list[Any]] = {}
        for r in rows:
            found.setdefault(r["job_id"], []).append(r)
        return found

    def _messages(
        self,
        conn: Connection,
        events: list[Any],
        tenants: dict[str, list[Any]],
        per_job: dict[str, list[Any]],
        now: float,
    ) -> list[dict[str, Any]]:
        d = t.webhook_deliveries.c
        ids = [e["id"] for e in events]
        have = {
            (r[0], r[1])
            for r in conn.execute(
                select(d.endpoint_id, d.event_id).where(d.event_id.in_(ids))
            ).all()
        }
        rows = []
        for ev in events:
            targets = [
                ep["id"]
                for ep in tenants.get(ev["tenant_id"], [])
                if ev["type"] in ep["events"] and ep["created_at"] <= ev["created_at"]
            ]
            targets += [
                ep["id"] for ep in per_job.get(ev["job_id"], []) if ev["type"] in ep["events"]
            ]
            for endpoint_id in targets:
                if (endpoint_id, ev["id"]) in have:
                    continue
                rows.append(
                    {
                        "id": self.ids("msg"),
                        "endpoint_id": endpoint_id,
                        "job_id": ev["job_id"],
                        "event_id": ev["id"],
                        "event_type": ev["type"],
                        "payload": event_payload(ev),
                        "status": "pending",
                        "attempts": 0,
                        "give_up_after": 0,  # set by the first claim
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
        return rows

    def _insert_ignore(self, conn: Connection) -> Any:
        keys = ["endpoint_id", "event_id"]
        if conn.dialect.name == "postgresql":
            return postgresql.insert(t.webhook_deliveries).on_conflict_do_nothing(
                index_elements=keys
            )
        return sqlite.insert(t.webhook_deliveries).on_conflict_do_nothing(index_elements=keys)

    def _advance(self, conn: Connection, after: int, upto: int, now: float) -> None:
        if upto <= after:
            return
        c = t.webhook_cursor.c
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(t.webhook_cursor)
            .on_conflict_do_nothing(index_elements=["name"])
            .values(name=_CURSOR, event_id=0, updated_at=now)
        )
        conn.execute(  # only forward: another replica may have gone further
            update(t.webhook_cursor)
            .where(c.name == _CURSOR, c.event_id < upto)
            .values(event_id=upto, updated_at=now)
        )

    # ------------------------------------------------------------ delivery

    def _due(self, now: float) -> Any:
        d = t.webhook_deliveries.c
        earlier = t.webhook_deliveries.alias("earlier")
        e = earlier.c
        blocked = (
            select(e.id)
            .where(
                e.endpoint_id == d.endpoint_id,
                e.job_id == d.job_id,
                e.event_id < d.event_id,
                e.status.in_(_OPEN),
            )
            .exists()
        )
        return and_(
            or_(
                and_(d.status == "pending", d.next_attempt_at <= now),
                and_(d.status == "sending", d.locked_until < now),
            ),
            ~blocked,
        )

    def claim(self, limit: int, lock_s: float, max_attempts: int) -> list[DueDelivery]:
        """Lease up to ``limit`` due messages for ``lock_s`` seconds (none when the last
        :meth:`fanout` found no enabled endpoint: a message only goes to one)."""
        d, ep = t.webhook_deliveries.c, t.webhook_endpoints.c
        if self._idle:
            return []  # no enabled endpoint at the last fan-out: nothing can be due
        now = self.clock()
        due = self._due(now)
        with read_tx(self.engine) as conn:
            if conn.execute(select(d.id).where(due).limit(1)).first() is None:
                return []
        q = (
            select(t.webhook_deliveries, ep.url, ep.secret)
            .join(t.webhook_endpoints, ep.id == d.endpoint_id)
            .where(due, ep.disabled_at.is_(None))
            .order_by(d.next_attempt_at, d.event_id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=t.webhook_deliveries)
        )
        claimed = []
        with write_tx(self.engine) as conn:
            for r in conn.execute(q).mappings().all():
                give_up = r["give_up_after"] or max_attempts
                conn.execute(
                    update(t.webhook_deliveries)
                    .where(d.id == r["id"])
                    .values(status="sending", locked_until=now + lock_s, give_up_after=give_up)
                )
                claimed.append(
                    DueDelivery(
                        id=r["id"],
                        job_id=r["job_id"],
                        event_id=r["event_id"],
                        url=r["url"],
                        secret=r["secret"],
                        payload=r["payload"],
                        attempt=r["attempts"] + 1,
                    )
                )
        return claimed

    def record_attempts(
        self, results: Sequence[tuple[DueDelivery, AttemptRecord, float]]
    ) -> list[str]:
        """Log attempts and settle their messages, in one transaction; each item is
        (message, attempt, seconds before a retry). Returns each message's status now."""
        now = self.clock()
        with write_tx(self.engine) as conn:
            return [self._settle(conn, d, a, retry, now) for d, a, retry in results]

    def _settle(
        self,
        conn: Connection,
        delivery: DueDelivery,
        attempt: AttemptRecord,
        retry_in_s: float,
        now: float,
    ) -> str:
        d = t.webhook_deliveries.c
        conn.execute(
            insert(t.webhook_attempts).values(
                delivery_id=delivery.id,
                attempt=attempt.attempt,
                started_at=attempt.started_at,
                duration_s=attempt.duration_s,
                address=attempt.address,
                status_code=attempt.status_code,
                error=attempt.error,
            )
        )
        row = conn.execute(select(d.status, d.give_up_after).where(d.id == delivery.id)).first()
        if row is None or row[0] in ("delivered", "canceled"):
            return str(row[0]) if row else "canceled"
        values: dict[str, Any] = {
            "attempts": attempt.attempt,
            "locked_until": None,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
        }
        if attempt.error is None:
            values.update(status="delivered", delivered_at=now)
        elif attempt.attempt >= row[1]:
            values.update(status="failed")
        else:
            values.update(status="pending", next_attempt_at=now + retry_in_s)
        conn.execute(update(t.webhook_deliveries).where(d.id == delivery.id).values(**values))
        return str(values["status"])

    # ------------------------------------------------------------ the log

    def deliveries(self, job_id: str) -> list[DeliveryRecord]:
        d, ep, a = t.webhook_deliveries.c, t.webhook_endpoints.c, t.webhook_attempts.c
        with read_tx(self.engine) as conn:
            rows = list(
                conn.execute(
                    select(t.webhook_deliveries, ep.url)
                    .join(t.webhook_endpoints, ep.id == d.endpoint_id)
                    .where(d.job_id == job_id)
                    .order_by(d.event_id, d.endpoint_id)
                ).mappings()
            )
            ids = [r["id"] for r in rows]
            log: dict[str, list[AttemptRecord]] = {}
            for r in conn.execute(
                select(t.webhook_attempts).where(a.delivery_id.in_(ids)).order_by(a.id)
            ).mappings():
                log.setdefault(r["delivery_id"], []).append(
                    AttemptRecord(
                        r["attempt"],
                        r["started_at"],
                        r["duration_s"],
                        r["address"],
                        r["status_code"],
                        r["error"],
                    )
                )
        return [
            DeliveryRecord(
                id=r["id"],
                endpoint_id=r["endpoint_id"],
                url=r["url"],
                job_id=r["job_id"],
                event_id=r["event_id"],
                event_type=r["event_type"],
                status=r["status"],
                attempts=r["attempts"],
                next_attempt_at=r["next_attempt_at"] if r["status"] in _OPEN else None,
                created_at=r["created_at"],
                delivered_at=r["delivered_at"],
                last_status_code=r["last_status_code"],
                last_error=r["last_error"],
                attempt_log=tuple(log.get(r["id"], ())),
            )
            for r in rows
        ]

    def replay(self, job_id: str, delivery_id: str | None, max_attempts: int) -> int:
        """Send again: one message (delivered or failed), or all the job's failed ones, of
        endpoints not removed. Each gets ``max_attempts`` more tries; the ``webhook-id``
        stays the same."""
        d, ep = t.webhook_deliveries.c, t.webhook_endpoints.c
        which = d.id == delivery_id if delivery_id else d.status == "failed"
        live = select(ep.id).where(ep.disabled_at.is_(None))
        with write_tx(self.engine) as conn:
            res = conn.execute(
                update(t.webhook_deliveries)
                .where(
                    d.job_id == job_id,
                    which,
                    d.status.in_(("delivered", "failed")),
                    d.endpoint_id.in_(live),
                )
                .values(
                    status="pending",
                    next_attempt_at=self.clock(),
                    locked_until=None,
                    give_up_after=d.attempts + max_attempts,
                )
            )
            return int(res.rowcount)

    def backlog(self) -> int:
        d = t.webhook_deliveries.c
        with read_tx(self.engine) as conn:
            q = select(func.count()).select_from(t.webhook_deliveries).where(d.status.in_(_OPEN))
            return int(conn.execute(q).scalar_one())
