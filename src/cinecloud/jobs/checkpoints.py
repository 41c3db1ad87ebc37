"""A job's newest denoise checkpoint, and giving a lease back, in the job store.

A worker stores a checkpoint's bytes under the job's key prefix (like an artifact), then
records it here: only the lease that holds the job may, and a repeat of the same call
changes nothing. The job keeps one checkpoint, the newest: a late retry of an older one
from the same lease does not replace a newer one. The checkpoint survives the job's
return to the queue (lease expiry, a retryable failure, a release), so the next lease
resumes from it (docs/checkpoints.md).

``release`` is how a preempted worker gives a job back: it is queued again at once, and
the attempt does not count against ``max_attempts``.

This module is part of the store, kept apart to keep ``store.py`` small: it works in the
store's transactions with its row helpers, and every status change still goes through
the lifecycle table and appends its event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx, write_tx
from cinecloud.jobs.lifecycle import Action
from cinecloud.jobs.records import JobRecord, NotFound
from cinecloud.jobs.store import JobStore

__all__ = ["CheckpointLedger", "CheckpointRecord", "NewCheckpoint"]

_NONE: dict[str, Any] = {
    "checkpoint_key": None,
    "checkpoint_step": None,
    "checkpoint_total_steps": None,
    "checkpoint_sha256": None,
    "checkpoint_size": None,
    "checkpoint_lease_id": None,
    "checkpoint_at": None,
}


@dataclass(frozen=True)
class NewCheckpoint:
    """What a worker reports: a stored blob holding the state after ``step``."""

    key: str
    step: int
    total_steps: int
    sha256: str
    size: int


@dataclass(frozen=True)
class CheckpointRecord:
    job_id: str
    key: str
    step: int
    total_steps: int
    sha256: str
    size: int
    lease_id: str
    created_at: float

    @classmethod
    def from_row(cls, row: Any) -> CheckpointRecord | None:
        if row["checkpoint_key"] is None:
            return None
        return cls(
            job_id=row["id"],
            key=row["checkpoint_key"],
            step=row["checkpoint_step"],
            total_steps=row["checkpoint_total_steps"],
            sha256=row["checkpoint_sha256"],
            size=row["checkpoint_size"],
            lease_id=row["checkpoint_lease_id"],
            created_at=row["checkpoint_at"],
        )


class CheckpointLedger:
    """The checkpoint columns of ``store``'s jobs, in its transactions and events."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def record(
        self, job_id: str, lease_id: str, new: NewCheckpoint
    ) -> tuple[CheckpointRecord, str | None]:
        """Make ``new`` the job's checkpoint; raises LeaseLost unless ``lease_id`` holds
        the job. Returns the job's checkpoint now and the key of a blob no longer needed
        (the one replaced, or ``new``'s own when it came late), else None."""
        s = self.store
        with write_tx(s.engine) as conn:
            row = s._held(conn, job_id, lease_id)
            current = CheckpointRecord.from_row(row)
            if current is not None and current.lease_id == lease_id and current.step >= new.step:
                # a repeat, or an older one arriving after a newer one
                return current, (None if current.key == new.key else new.key)
            now = s.clock()
            values = {
                "checkpoint_key": new.key,
                "checkpoint_step": new.step,
                "checkpoint_total_steps": new.total_steps,
                "checkpoint_sha256": new.sha256,
                "checkpoint_size": new.size,
                "checkpoint_lease_id": lease_id,
                "checkpoint_at": now,
            }
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))
            s._event(conn, job_id, "checkpoint", {"step": new.step, "total_steps": new.total_steps})
            record = CheckpointRecord.from_row({**row, **values})
            assert record is not None
            replaced = current.key if current is not None and current.key != new.key else None
            return record, replaced

    def latest(self, job_id: str) -> CheckpointRecord | None:
        """The job's checkpoint, if it has one."""
        with read_tx(self.store.engine) as conn:
            row = self.store._job_row(conn, job_id)
            if row is None:
                raise NotFound(job_id)
            return CheckpointRecord.from_row(row)

    def forget(self, job_id: str) -> str | None:
        """Drop the job's checkpoint (finished, or unusable); the key of its blob."""
        s = self.store
        with write_tx(s.engine) as conn:
            row = s._job_row(conn, job_id)
            if row is None or row["checkpoint_key"] is None:
                return None
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**_NONE))
            return str(row["checkpoint_key"])

    def release(self, job_id: str, lease_id: str, reason: str) -> JobRecord:
        """Queue the job again at once without counting the attempt; raises LeaseLost
        unless ``lease_id`` holds it. A repeat (the job still queued) changes nothing."""
        s = self.store
        with write_tx(s.engine) as conn:
            row = s._job_row(conn, job_id)
            if row is not None and row["lease_id"] == lease_id and row["status"] == "queued":
                return s._record(conn, row)
            row = s._held(conn, job_id, lease_id)
            s._set_status(
                conn,
                row,
                Action.REQUEUE,
                {
                    "lease_expires_at": None,
                    "lease_owner": None,
                    "attempts": max(0, row["attempts"] - 1),
                    "stage": None,
                    "step": None,
                    "progress": 0,
                    "eta_s": None,
                },
                {
                    "reason": reason,
                    "attempt": row["attempts"],
                    "checkpoint_step": row["checkpoint_step"],
                },
            )
            return s._record(conn, s._job_row(conn, job_id))
