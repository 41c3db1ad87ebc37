"""The jobs a worker holds a lease on, and how many more it may lease.

A held job goes through these states, in the worker parent's bookkeeping:

``leased``        its inputs fetched, not yet handed to the engine child
``sent``          on the child's pipe: waiting for the engine, or on it
``engine_done``   the engine is through with it (it renders in the child)
``ended``         the child answered (or is gone): it uploads and reports on its own thread

The worker leases ahead (``worker.overlap``) so that the engine always finds the next
job waiting in the child when it frees up: it keeps up to :attr:`LeaseLimits.ahead` jobs
short of ``engine_done`` (the one on the engine and the next), and no more than
:attr:`LeaseLimits.cap` held in all, so rendering and uploading that fall behind the
engine stop the leasing rather than pile up leases.

It leases the next job only once every job short of the end of its engine work is
``near_end``: its remaining engine time, estimated from its steps so far, is within
``worker.lease_ahead_s``. A worker that took the next job while a long one had a minute
left would keep it from an idle worker elsewhere; leased a moment before the engine
frees up, it waits no longer than the lease round trip would have cost. A job whose
model's last engine call took at most that long is near its end as it is handed to the
engine, so short jobs always have the next one waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cinecloud.workers.client import HeldLease
from cinecloud.workers.delivery import DeliveryGroup
from cinecloud.workers.messages import RunJob
from cinecloud.workers.progress import EventThrottle

__all__ = ["HeldJob", "HeldJobs", "LeaseLimits", "lease_limits"]


@dataclass(frozen=True)
class LeaseLimits:
    """``ahead``: jobs held short of the end of their engine work (running or waiting);
    ``cap``: jobs held in all (rendering and uploading included); ``batch``: jobs one
    engine call takes (what a worker with nothing near its end may lease)."""

    ahead: int
    cap: int
    batch: int = 1


def lease_limits(overlap: bool, render_processes: int, batch: int = 1) -> LeaseLimits:
    """One job (or one batch of up to ``batch``: ``worker.max_batch``) at a time without
    overlap; with it, the one on the engine and the next, and at most one job rendering
    per render process and as many again waiting to render or uploading, beyond those."""
    batch = max(1, batch)
    if not overlap:
        return LeaseLimits(ahead=batch, cap=batch, batch=batch)
    return LeaseLimits(ahead=2 * batch, cap=2 * max(1, render_processes) + 2 * batch, batch=batch)


@dataclass
class HeldJob:
    """One leased job in the worker parent."""

    job: RunJob
    dir: Path
    leased_at: float = 0.0  # wall clock, for its trace
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    throttle: EventThrottle = field(default_factory=EventThrottle)
    sent: bool = False  # handed to the engine child
    started: bool = False  # the child reported a step of it
    near_end: bool = False  # its engine work is nearly done: time to lease the next
    engine_done: bool = False  # the engine is through with it
    ended: bool = False  # the child answered or is gone; the parent finishes it
    stop_deadline: float | None = None  # a Cancel went to the child: answer by then
    model_load: float = 0.0  # the model load it waited for (seconds), if any
    load_span: tuple[float, float] | None = None
    lease_round: int = 0  # which lease brought it: only jobs leased together batch
    delivery: DeliveryGroup | None = None  # the batch it is delivered with, if any

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def held(self) -> HeldLease:
        return HeldLease(self.job.job_id, self.job.lease_id)

    def request_cancel(self, reason: str) -> None:
        if not self.cancel.is_set():
            self.reason = reason
            self.cancel.set()


class HeldJobs:
    """The held jobs, in lease order, shared by the lease, engine, heartbeat and
    completion threads. Changes wake :meth:`wait_for_room` (and ``on_change``)."""

    def __init__(self, limits: LeaseLimits, on_change: Callable[[], None] = lambda: None) -> None:
        self.limits = limits
        self._jobs: dict[str, HeldJob] = {}
        self._cond = threading.Condition()
        self._on_change = on_change

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)

    def get(self, job_id: str) -> HeldJob | None:
        with self._cond:
            return self._jobs.get(job_id)

    def all(self) -> list[HeldJob]:
        with self._cond:
            return list(self._jobs.values())

    def unsent(self) -> list[HeldJob]:
        with self._cond:
            return [h for h in self._jobs.values() if not h.sent and not h.ended]

    def in_child(self) -> list[HeldJob]:
        """Handed to the child and not answered yet (waiting, on the engine, rendering)."""
        with self._cond:
            return [h for h in self._jobs.values() if h.sent and not h.ended]

    def before_engine_end(self) -> int:
        """Jobs held short of the end of their engine work."""
        with self._cond:
            return self._short_of_engine_end()

    def _short_of_engine_end(self) -> int:
        return sum(1 for h in self._jobs.values() if not h.engine_done and not h.ended)

    def room(self) -> int:
        """How many more jobs may be leased now."""
        with self._cond:
            return self._room()

    def _room(self) -> int:
        short = [h for h in self._jobs.values() if not h.engine_done and not h.ended]
        ahead = self.limits.ahead
        if not short or not all(h.near_end for h in short):
            ahead = self.limits.batch  # what runs now; the next waits for its end
        return max(0, min(ahead - len(short), self.limits.cap - len(self._jobs)))

    def mark_near_end(self, held: HeldJob) -> None:
        """``held``'s engine work ends within ``worker.lease_ahead_s``: the next may come."""
        with self._cond:
            if not held.near_end:
                held.near_end = True
                self._changed()

    def wait_for_room(self, timeout: float, at_least: int = 1) -> int:
        """:meth:`room` once it is ``at_least`` (a whole batch), or 0 after ``timeout``
        seconds."""
        want = max(1, min(at_least, self.limits.batch, self.limits.cap))
        with self._cond:
            if not self._cond.wait_for(lambda: self._room() >= want, timeout):
                return 0
            return self._room()

    def wait_gone(self, job_id: str, closed: Callable[[], bool]) -> None:
        """Wait until an earlier attempt of ``job_id`` (given back or failed here, and
        leased again at once) is forgotten: its directory is gone then, so the new
        attempt's files are never removed with it."""
        with self._cond:
            while job_id in self._jobs and not closed():
                self._cond.wait(0.5)

    def admit(self, held: HeldJob, closed: Callable[[], bool]) -> bool:
        """Hold ``held`` unless ``closed()`` (the worker stops): checked under the same
        lock as :meth:`empty_if`, so a job admitted is never missed by a stopping loop."""
        with self._cond:
            if closed():
                return False
            self._jobs[held.job_id] = held
            self._changed()
        return True

    def admit_all(self, held: list[HeldJob], closed: Callable[[], bool]) -> bool:
        """:meth:`admit` for the jobs of one lease at once, so the engine loop never sees
        part of a batch."""
        with self._cond:
            if closed():
                return False
            for h in held:
                self._jobs[h.job_id] = h
            self._changed()
        return True

    def empty_if(self, closed: Callable[[], bool]) -> bool:
        """Whether ``closed()`` and nothing is held (the stopping loop may end)."""
        with self._cond:
            return closed() and not self._jobs

    def mark_engine_done(self, held: HeldJob) -> None:
        with self._cond:
            held.engine_done = True
            self._changed()

    def mark_ended(self, held: HeldJob) -> bool:
        """``held``'s child side is over; False if it already was (ended once only)."""
        with self._cond:
            if held.ended:
                return False
            held.ended = held.engine_done = True
            self._changed()
        return True

    def remove(self, held: HeldJob) -> None:
        """Forget ``held`` (a later attempt of its job, held since, stays)."""
        with self._cond:
            if self._jobs.get(held.job_id) is held:
                del self._jobs[held.job_id]
            self._changed()

    def _changed(self) -> None:
        self._cond.notify_all()
        self._on_change()
