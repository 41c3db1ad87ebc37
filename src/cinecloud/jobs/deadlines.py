"""Deadlines: queued jobs past their ``deadline_at`` fail with ``deadline_exceeded``.

A job not started by its deadline (``Cancel-After`` on the request) must not start:
the lease query already skips it, and the control plane's sweep calls
:func:`expire_deadlines` to end it. It fails without cost: only completed jobs are
billed. A job that is running when its deadline passes keeps running; if it goes back
to the queue afterwards (its lease expired, a retryable failure), it fails here.
"""

from __future__ import annotations

from sqlalchemy import select

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import write_tx
from cinecloud.jobs.lifecycle import Action, JobStatus
from cinecloud.jobs.records import JobRecord
from cinecloud.jobs.store import JobStore

__all__ = ["DEADLINE_EXCEEDED", "expire_deadlines"]

DEADLINE_EXCEEDED = "deadline_exceeded"


def expire_deadlines(store: JobStore, limit: int = 500) -> list[JobRecord]:
    """Fail up to ``limit`` queued jobs whose deadline has come; returns them as failed.

    Concurrent sweepers (two replicas for a moment) skip each other's rows.
    """
    c = t.jobs.c
    failed: list[JobRecord] = []
    with write_tx(store.engine) as conn:
        now = store.clock()
        rows = (
            conn.execute(
                select(t.jobs)
                .where(
                    c.status == JobStatus.QUEUED.value,
                    c.deadline_at.is_not(None),
                    c.deadline_at <= now,
                )
                .order_by(c.deadline_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            .mappings()
            .all()
        )
        for row in rows:
            waited = now - row["created_at"]
            message = f"the job did not start before its deadline (queued {waited:.1f} s)"
            # the store's own transition helper: the status change and its event together
            store._set_status(
                conn,
                row,
                Action.FAIL,
                {"error_code": DEADLINE_EXCEEDED, "error_message": message, "completed_at": now},
                {"code": DEADLINE_EXCEEDED, "message": message},
            )
            failed.append(JobRecord.from_row(store._job_row(conn, row["id"])))
    return failed
