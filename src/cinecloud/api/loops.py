"""The control plane's background loops, run only by the leading replica.

Loops are named ticks with an interval: lease expiry and retries, deadlines and
retention (one ``sweep``), and whatever else registers through :func:`add_loop` before
the app starts (the autoscaler, for one). One supervisor per replica takes or checks
the leader lock (:mod:`cinecloud.jobs.leader`) every ``leader.interval_s``: while it
leads, each loop runs in its own task; when it stops leading, they are canceled. On
SQLite the one replica always leads.

Every loop must be safe to run twice at once: a replica that loses the lock (its
database connection broke) can overlap the next leader for up to one check. The
built-in ones are: each of their steps is one transaction that skips rows another holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from cinecloud.api.errors import database_unavailable
from cinecloud.jobs.leader import LeaderLock

if TYPE_CHECKING:
    from cinecloud.api.state import AppState

__all__ = ["Leadership", "Loop", "LoopFailures", "add_loop", "replica_name", "run_leader_loops"]

log = logging.getLogger("cinecloud.api.loops")

#: One turn of a loop; it gets the app's state.
Tick = Callable[["AppState"], Awaitable[Any]]


@dataclass(frozen=True)
class Loop:
    name: str
    tick: Tick
    interval_s: float


@dataclass
class Leadership:
    """Whether this replica leads now (``/healthz`` and ``cinecloud_leader`` show it)."""

    replica: str = ""
    leading: bool = False
    since: float | None = None  # when it last became the leader (the app's clock)
    changes: int = 0


def replica_name(configured: str, port: int) -> str:
    """This replica's name: the configured one, else ``hostname:port:pid``."""
    return configured or f"{socket.gethostname()}:{port}:{os.getpid()}"


def add_loop(state: AppState, name: str, tick: Tick, interval_s: float) -> None:
    """Run ``tick`` every ``interval_s`` on the leading replica (replaces a loop of that
    name). Register before the app starts serving."""
    if interval_s <= 0:
        raise ValueError(f"loop {name!r}: interval_s must be positive (got {interval_s})")
    state.loops[name] = Loop(name, tick, interval_s)


class LoopFailures:
    """How a background loop reports its failed turns without flooding the log.

    A database that is away (:func:`~cinecloud.api.errors.database_unavailable`) is one
    warning, without a traceback, when the outage starts and one line when a turn passes
    again; the turns in between are logged at debug level. Any other error is logged
    with its traceback every time: it is a bug, not weather.
    """

    def __init__(self, name: str, logger: logging.Logger = log) -> None:
        self.name = name
        self.log = logger
        self.outage_turns = 0  # failed turns since the database went away

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, OperationalError) and database_unavailable(exc):
            self.outage_turns += 1
            if self.outage_turns == 1:
                self.log.warning(
                    "%s: the database is unavailable (%s); retrying",
                    self.name,
                    str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__,
                )
            else:
                self.log.debug("%s: the database is still unavailable", self.name)
            return
        self.log.error("%s failed", self.name, exc_info=exc)

    def passed(self) -> None:
        if self.outage_turns:
            self.log.warning(
                "%s: the database is back after %d failed turns", self.name, self.outage_turns
            )
            self.outage_turns = 0


async def _run(state: AppState, loop: Loop) -> None:
    failures = LoopFailures(f"loop {loop.name}")
    while True:
        try:
            await loop.tick(state)
        except Exception as exc:  # keep looping through a database blip
            failures.failed(exc)
        else:
            failures.passed()
        await asyncio.sleep(loop.interval_s)


def _set_leading(state: AppState, leading: bool) -> None:
    lead = state.leadership
    if leading == lead.leading:
        return
    lead.leading, lead.changes = leading, lead.changes + 1
    lead.since = state.clock() if leading else None
    state.metrics.leader.labels(replica=lead.replica).set(1 if leading else 0)
    if leading:
        log.warning("replica %s leads: it runs %s", lead.replica, ", ".join(state.loops))
    else:
        log.warning("replica %s no longer leads; its loops stop", lead.replica)


async def _stop(tasks: dict[str, asyncio.Task[None]]) -> None:
    for task in tasks.values():
        task.cancel()
    for task in tasks.values():
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()


async def run_leader_loops(state: AppState, lock: LeaderLock) -> None:
    """Take the lead when the lock is free and run the loops while holding it."""
    tasks: dict[str, asyncio.Task[None]] = {}
    state.metrics.leader.labels(replica=state.leadership.replica).set(0)
    try:
        while True:
            leading = await run_in_threadpool(lock.hold)
            _set_leading(state, leading)
            if leading:
                for name, loop in state.loops.items():
                    if name not in tasks:
                        tasks[name] = asyncio.create_task(_run(state, loop))
            elif tasks:
                await _stop(tasks)
            await asyncio.sleep(state.cfg.leader.interval_s)
    finally:
        await _stop(tasks)
        _set_leading(state, False)
        await run_in_threadpool(lock.release)
