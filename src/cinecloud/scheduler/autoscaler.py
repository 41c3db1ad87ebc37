"""The autoscaler's actuation: observe the pools in the job store, decide, apply, record.

:func:`autoscale_once` is one pass: it reads each pool's queued and running jobs and
its arrivals since the last pass from the database, asks the launcher how many workers
run, calls the pure :func:`~cinecloud.scheduler.autoscale.autoscale`, hands each pool's
:class:`Desired` count to the launcher, and records the decision (a ring of recent
decisions and the ``cinecloud_autoscaler_desired_workers`` gauge). The control plane
calls it every ``autoscale.interval_s`` (:func:`autoscale_loop`); a leader-elected loop
or a test can call it directly with its own ``now``.

A pool is a model id: its workers serve that model. Launchers put workers somewhere
(:class:`Launcher`): ``LocalLauncher`` (OS processes), and :class:`ObservedLauncher`,
which starts nothing and counts the registered workers, for fleets that something
else scales from the gauge (a Kubernetes HPA or KEDA).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine, func, select

from cinecloud.jobs import JobStatus, JobStore
from cinecloud.jobs import tables as t
from cinecloud.jobs.db import read_tx
from cinecloud.scheduler.autoscale import (
    AutoscaleContext,
    Decision,
    PoolMemory,
    PoolObservation,
    PoolPolicy,
    RateEstimate,
    autoscale,
    ewma_rate,
)
from cinecloud.scheduler.lease import FamilyOf, params_shape
from cinecloud.scheduler.service import ServiceModels
from cinecloud.telemetry import Metrics

__all__ = [
    "Autoscaler",
    "Desired",
    "Launcher",
    "ObservedLauncher",
    "PoolLoad",
    "autoscale_loop",
    "autoscale_once",
    "busy_worker_names",
    "decision_view",
    "pool_loads",
]

log = logging.getLogger(__name__)

#: Queued jobs read per pass to estimate a pool's service time (the count is exact).
SHAPE_SAMPLE = 500
#: Recent completions per pool that calibrate the estimate against measured GPU time.
CALIBRATION_SAMPLE = 20


@dataclass(frozen=True)
class Desired:
    """Workers wanted for a pool: ``on_demand`` on capacity that is never reclaimed,
    ``spot`` on capacity that may be. A launcher without that distinction runs
    ``total``."""

    on_demand: int
    spot: int = 0

    @property
    def total(self) -> int:
        return self.on_demand + self.spot


class Launcher(Protocol):
    """Puts a pool's workers somewhere."""

    def scale(self, pool: str, desired: Desired) -> None:
        """Start or stop workers of ``pool`` until ``desired`` run (idle ones go first)."""

    def current(self, pool: str) -> int:
        """Workers of ``pool`` launched and not stopped, starting ones included."""


class ObservedLauncher:
    """Starts nothing: the workers of a pool are those registered that serve its model.
    For fleets scaled from the ``cinecloud_autoscaler_desired_workers`` gauge."""

    def __init__(self, registered: Callable[[], Sequence[Collection[str]]]) -> None:
        self._registered = registered  # the model lists of the workers seen recently

    def scale(self, pool: str, desired: Desired) -> None:
        return None

    def current(self, pool: str) -> int:
        return sum(1 for models in self._registered() if pool in models)


@dataclass(frozen=True)
class PoolLoad:
    """A pool's jobs in the store: queued and running counts, arrivals in the window,
    the stored (params, size) of up to :data:`SHAPE_SAMPLE` oldest queued jobs, and
    (params, size, gpu_seconds) of up to :data:`CALIBRATION_SAMPLE` latest completed."""

    queued: int = 0
    in_flight: int = 0
    arrivals: int = 0
    shapes: tuple[tuple[dict[str, Any], str], ...] = ()
    done: tuple[tuple[dict[str, Any], str, float], ...] = ()


def pool_loads(
    engine: Engine, pools: Sequence[str], since: float, now: float
) -> dict[str, PoolLoad]:
    """Every pool's :class:`PoolLoad`; arrivals are jobs created in ``(since, now]``."""
    c = t.jobs.c
    live = [JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value]
    mine = c.model.in_(list(pools))
    with read_tx(engine) as conn:
        counts = conn.execute(
            select(c.model, c.status, func.count())
            .where(mine, c.status.in_(live), c.deleted_at.is_(None))
            .group_by(c.model, c.status)
        ).all()
        arrived = conn.execute(
            select(c.model, func.count())
            .where(mine, c.created_at > since, c.created_at <= now)
            .group_by(c.model)
        ).all()
        sample = conn.execute(
            select(c.model, c.params, c.size)
            .where(mine, c.status == JobStatus.QUEUED.value, c.deleted_at.is_(None))
            .order_by(c.created_at)
            .limit(SHAPE_SAMPLE)
        ).all()
        done = conn.execute(
            select(c.model, c.params, c.size, c.gpu_seconds)
            .where(mine, c.status == JobStatus.COMPLETED.value, c.gpu_seconds > 0)
            .order_by(c.completed_at.desc())
            .limit(CALIBRATION_SAMPLE * len(pools))
        ).all()
    queued = {m: int(n) for m, s, n in counts if s == JobStatus.QUEUED.value}
    running = {m: int(n) for m, s, n in counts if s == JobStatus.IN_PROGRESS.value}
    arrivals = {m: int(n) for m, n in arrived}
    return {
        pool: PoolLoad(
            queued=queued.get(pool, 0),
            in_flight=running.get(pool, 0),
            arrivals=arrivals.get(pool, 0),
            shapes=tuple((dict(p), str(s)) for m, p, s in sample if m == pool),
            done=tuple((dict(p), str(s), float(g)) for m, p, s, g in done if m == pool)[
                :CALIBRATION_SAMPLE
            ],
        )
        for pool in pools
    }


def busy_worker_names(engine: Engine) -> set[str]:
    """The names of the workers that hold a running job's lease (launchers stop others
    first)."""
    j, w = t.jobs.c, t.workers.c
    with read_tx(engine) as conn:
        rows = conn.execute(
            select(w.name)
            .select_from(t.jobs.join(t.workers, j.lease_owner == w.id))
            .where(j.status == JobStatus.IN_PROGRESS.value)
        ).all()
    return {r[0] for r in rows}


@dataclass
class Autoscaler:
    """The loop's state: settings, the launcher, and what each pass leaves for the next.

    ``fallback_service_s`` is a pool's service-time estimate while none of its jobs is
    queued and none ever was (e.g. its model's default request).
    """

    jobs: JobStore
    launcher: Launcher
    pools: Sequence[str]
    policy: PoolPolicy
    service: ServiceModels
    family_of: FamilyOf
    fallback_service_s: Mapping[str, float] = field(default_factory=dict)
    half_life_s: float = 60.0
    metrics: Metrics | None = None
    history: int = 200
    launcher_name: str = "local"
    memory: dict[str, PoolMemory] = field(default_factory=dict)
    rates: dict[str, RateEstimate] = field(default_factory=dict)
    model_s: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, float] = field(default_factory=dict)
    last_at: float | None = None
    latest: dict[str, Decision] = field(default_factory=dict)
    _ring: deque[Decision] = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.pools:
            raise ValueError("the autoscaler needs at least one pool")
        self._ring = deque(maxlen=self.history)

    def recent(self) -> list[Decision]:
        """The recorded decisions, newest first."""
        with self._lock:
            return list(reversed(self._ring))

    def current(self) -> list[Decision]:
        """Each pool's latest decision, by pool."""
        with self._lock:
            return [d for _, d in sorted(self.latest.items())]

    def record(self, decisions: Mapping[str, Decision]) -> None:
        """Keep the decisions that changed the count or the reason, and publish each."""
        with self._lock:
            for pool, d in decisions.items():
                before = self.latest.get(pool)
                if before is None or d.changed or _gist(d.reason) != _gist(before.reason):
                    self._ring.append(d)
                self.latest[pool] = d
        if self.metrics is not None:
            for pool, d in decisions.items():
                self.metrics.autoscaler_desired.labels(pool, "on_demand").set(d.on_demand)
                self.metrics.autoscaler_desired.labels(pool, "spot").set(d.spot)
                self.metrics.autoscaler_workers.labels(pool).set(d.observation.workers)

    def estimate(self, pool: str, load: PoolLoad) -> float:
        """One job's seconds on one worker: the service model's mean over the queued jobs
        (the last mean, or the fallback, when none is queued), times the ratio of measured
        to modelled GPU seconds of the pool's latest completions (the model's figures are
        of one reference GPU; this fleet may be faster, slower, or a CPU)."""
        family = self.family_of(pool)

        def modelled(params: Mapping[str, Any], size: str) -> float:
            return self.service.service_s(family, params_shape(params, size), 1)

        if load.shapes:
            self.model_s[pool] = sum(modelled(p, s) for p, s in load.shapes) / len(load.shapes)
        if load.done:
            expected = sum(modelled(p, s) for p, s, _ in load.done)
            if expected > 0:
                self.calibration[pool] = sum(g for *_, g in load.done) / expected
        base = self.model_s.get(pool, self.fallback_service_s.get(pool, 60.0))
        return max(base * self.calibration.get(pool, 1.0), 1e-3)


def _gist(reason: str) -> str:
    """A reason's cause without its numbers, so a hold whose counts drift, or the hold
    that follows a change for the same cause, is not recorded again."""
    return "".join(ch for ch in reason.partition(":")[2] if not ch.isdigit())


def autoscale_once(scaler: Autoscaler, now: float) -> dict[str, Decision]:
    """One pass: observe, decide, apply, record. Returns each pool's decision.

    A launcher that fails for one pool is logged; the other pools are still applied.
    """
    since = scaler.last_at if scaler.last_at is not None else now
    loads = pool_loads(scaler.jobs.engine, scaler.pools, since, now)
    observed: dict[str, PoolObservation] = {}
    for pool, load in loads.items():
        prev = scaler.rates.get(pool, RateEstimate(0.0, since))
        scaler.rates[pool] = ewma_rate(prev, load.arrivals, now, scaler.half_life_s)
        observed[pool] = PoolObservation(
            queued=load.queued,
            in_flight=load.in_flight,
            workers=scaler.launcher.current(pool),
            arrival_rate=scaler.rates[pool].rate,
            service_s=scaler.estimate(pool, load),
        )
    ctx = AutoscaleContext(now, observed, memory=scaler.memory, default=scaler.policy)
    decisions = autoscale(ctx)
    # Published before the launcher acts: stopping a worker waits for it to exit, and a
    # reader that sees the worker gone must already see the decision that stopped it.
    scaler.last_at = now
    scaler.record(decisions)
    for pool, d in decisions.items():
        scaler.memory[pool] = d.memory
        if d.changed:
            log.info("autoscaler %s: %s", pool, d.reason)
        try:
            scaler.launcher.scale(pool, Desired(d.on_demand, d.spot))
        except Exception:  # one pool's launcher failure must not stop the others
            log.exception("could not scale pool %s to %d", pool, d.desired)
    return decisions


async def autoscale_loop(scaler: Autoscaler, clock: Callable[[], float], interval_s: float) -> None:
    """Run :func:`autoscale_once` every ``interval_s`` (in a thread: it blocks on the
    database and on the launcher) until cancelled."""
    while True:
        try:
            await asyncio.to_thread(autoscale_once, scaler, clock())
        except Exception:  # keep scaling through a database blip
            log.exception("autoscaler pass failed")
        await asyncio.sleep(interval_s)


def decision_view(d: Decision) -> dict[str, Any]:
    """A decision as JSON for the admin API and the ops view."""
    o = d.observation
    return {
        "pool": d.pool,
        "at": d.at,
        "desired": d.desired,
        "on_demand": d.on_demand,
        "spot": d.spot,
        "previous": d.previous,
        "target": d.target,
        "reason": d.reason,
        "observed": {
            "queued": o.queued,
            "in_flight": o.in_flight,
            "workers": o.workers,
            "arrival_rate_per_min": o.arrival_rate * 60.0,
            "service_s": o.service_s,
        },
    }
