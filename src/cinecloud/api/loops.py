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

from starlette.concurrency import run_in_threadpool

from cinecloud.jobs.leader import LeaderLock

if TYPE_CHECKING:
    from cinecloud.api.state import AppState

__all__ = ["Leadership", "Loop", "add_loop", "replica_name", "run_leader_loops"]

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


async def _run(state: AppState, loop: Loop) -> None:
    while True:
        try:
            await loop.tick(state)
        except Exception:  # keep looping through a database blip
            log.exception("loop %s failed", loop.name)
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
