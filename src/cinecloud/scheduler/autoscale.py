"""The autoscaling policy: how many workers each model pool wants, and on what capacity.

Pure: the caller passes what it observed of each pool (:class:`PoolObservation`), the
pool's settings (:class:`PoolPolicy`), the time ``now`` and the state the previous call
returned (:class:`PoolMemory`); :func:`autoscale` returns one :class:`Decision` per
pool, with the memory for the next call. An actuator (a launcher) applies it.

The target of a pool is the largest of three terms:

- **load**: the arrival rate (an EWMA, :func:`ewma_rate`) times one job's service time
  is the offered load ``R`` in busy workers. The smallest ``N`` whose M/M/N (Erlang C)
  queue keeps ``P(wait > target_wait_s)`` at or below ``1 - wait_quantile``
  (:func:`workers_for_load`). Video jobs take a near-constant time, so the exponential
  service of M/M/N overstates the wait: the term errs on the side of capacity.
- **backlog**: the jobs already queued must each start within ``target_wait_s``. A
  running job frees its worker after half a service time on average; a new worker
  starts its first job after ``cold_start_s``. Each can start ``1 + (target - lead) //
  service`` queued jobs in time (at least one); the term is the running jobs' workers
  plus enough new ones for the rest.
- **running**: never fewer workers than running jobs.

Then the pool's floor (``min_workers``; and one worker, until the pool has been idle
for ``idle_to_zero_s``), its ceiling (``max_workers``), no shrinking while jobs wait
(every worker is then busy or still starting) and the delays: a higher
target is applied once it has held for ``upscale_delay_s`` (at once from zero: an
empty pool with work serves nothing), a lower one once it has held for
``downscale_delay_s``. Once idle for ``idle_to_zero_s``, the load term is dropped
(the forecast of a pool without work is no work) and the pool goes to zero.

The capacity split (:func:`split_capacity`) puts the first ``on_demand_base`` workers
on on-demand capacity (never preempted) and ``on_demand_share`` of the rest, the
remainder on spot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

__all__ = [
    "AutoscaleContext",
    "Decision",
    "PoolMemory",
    "PoolObservation",
    "PoolPolicy",
    "RateEstimate",
    "autoscale",
    "backlog_workers",
    "decide",
    "ewma_rate",
    "split_capacity",
    "wait_exceeds",
    "workers_for_load",
]


@dataclass(frozen=True)
class PoolPolicy:
    """One pool's settings; times in seconds."""

    min_workers: int = 0
    max_workers: int = 4
    target_wait_s: float = 60.0
    wait_quantile: float = 0.95
    cold_start_s: float = 45.0
    idle_to_zero_s: float = 300.0
    upscale_delay_s: float = 0.0
    downscale_delay_s: float = 60.0
    on_demand_base: int = 1
    on_demand_share: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError(
                "need 0 <= min_workers <= max_workers "
                f"(got {self.min_workers} and {self.max_workers})"
            )
        if self.target_wait_s <= 0:
            raise ValueError(f"target_wait_s must be positive (got {self.target_wait_s})")
        if not 0.0 < self.wait_quantile < 1.0:
            raise ValueError(f"wait_quantile must be in (0, 1) (got {self.wait_quantile})")
        for name in ("cold_start_s", "idle_to_zero_s", "upscale_delay_s", "downscale_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (got {getattr(self, name)})")
        if self.on_demand_base < 0:
            raise ValueError(f"on_demand_base must not be negative (got {self.on_demand_base})")
        if not 0.0 <= self.on_demand_share <= 1.0:
            raise ValueError(f"on_demand_share must be in [0, 1] (got {self.on_demand_share})")


@dataclass(frozen=True)
class PoolObservation:
    """What the caller saw of a pool at ``now``.

    ``workers`` counts the workers launched and not stopped, starting ones included;
    ``arrival_rate`` is in jobs a second; ``service_s`` is one job's estimated seconds
    on one worker.
    """

    queued: int
    in_flight: int
    workers: int
    arrival_rate: float
    service_s: float

    def __post_init__(self) -> None:
        for name in ("queued", "in_flight", "workers", "arrival_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (got {getattr(self, name)})")
        if self.service_s <= 0:
            raise ValueError(f"service_s must be positive (got {self.service_s})")


@dataclass(frozen=True)
class PoolMemory:
    """What a decision leaves for the next: the desired count, since when the target
    has pointed away from it (and which way), and when the pool last had work."""

    desired: int = 0
    pending_since: float | None = None
    pending_up: bool = False
    busy_at: float | None = None


@dataclass(frozen=True)
class Decision:
    """One pool's decision at ``at``: ``desired`` workers, ``on_demand + spot`` of them."""

    pool: str
    at: float
    desired: int
    on_demand: int
    spot: int
    previous: int
    target: int
    reason: str
    observation: PoolObservation
    memory: PoolMemory

    @property
    def changed(self) -> bool:
        return self.desired != self.previous


@dataclass(frozen=True)
class AutoscaleContext:
    """Everything :func:`autoscale` reads. A pool without a policy gets ``default``; a
    pool without memory starts from zero workers."""

    now: float
    pools: Mapping[str, PoolObservation]
    policies: Mapping[str, PoolPolicy] = field(default_factory=dict)
    memory: Mapping[str, PoolMemory] = field(default_factory=dict)
    default: PoolPolicy = field(default_factory=PoolPolicy)


@dataclass(frozen=True)
class RateEstimate:
    """An arrival rate (jobs a second) as of ``at`` (None: nothing observed yet)."""

    rate: float = 0.0
    at: float | None = None


# ---------------------------------------------------------------- the math


def ewma_rate(prev: RateEstimate, arrivals: int, now: float, half_life_s: float) -> RateEstimate:
    """The rate after ``arrivals`` jobs came since ``prev.at``: an exponentially weighted
    average whose weight on the past halves every ``half_life_s`` seconds, whatever the
    spacing of the calls. The first call only starts the clock."""
    if arrivals < 0 or half_life_s <= 0:
        raise ValueError("arrivals must be >= 0 and half_life_s > 0")
    if prev.at is None:
        return RateEstimate(prev.rate, now)
    dt = now - prev.at
    if dt <= 0:
        return prev
    keep = 0.5 ** (dt / half_life_s)
    return RateEstimate(keep * prev.rate + (1.0 - keep) * arrivals / dt, now)


def wait_exceeds(n: int, load: float, service_s: float, wait_s: float) -> float:
    """``P(queue wait > wait_s)`` of an M/M/n queue with offered load ``load`` (Erlang C
    times the exponential tail). 1 when ``n <= load`` (the queue grows without end)."""
    if load <= 0:
        return 0.0
    if n <= load:
        return 1.0
    b = 1.0  # Erlang B by its recurrence, stable for large n
    for k in range(1, n + 1):
        b = load * b / (k + load * b)
    c = n * b / (n - load * (1.0 - b))
    return c * math.exp(-(n - load) * wait_s / service_s)


def workers_for_load(
    rate: float, service_s: float, wait_s: float, quantile: float, limit: int
) -> int:
    """The fewest workers (at most ``limit``) whose M/M/n queue keeps the ``quantile`` of
    the wait at or below ``wait_s``; 0 without arrivals."""
    load = rate * service_s
    if load <= 0 or limit <= 0:
        return 0
    n = max(1, math.floor(load) + 1)
    b = 1.0
    for k in range(1, n + 1):
        b = load * b / (k + load * b)
    while n < limit:
        c = n * b / (n - load * (1.0 - b))
        if c * math.exp(-(n - load) * wait_s / service_s) <= 1.0 - quantile:
            break
        n += 1
        b = load * b / (n + load * b)
    return min(n, limit)


def backlog_workers(obs: PoolObservation, policy: PoolPolicy) -> int:
    """Workers that start every queued job within ``target_wait_s``: the running jobs'
    workers, each taking ``1 + (target - service / 2) // service`` more in time, and new
    ones (after ``cold_start_s``) for the rest."""
    if obs.queued == 0:
        return obs.in_flight
    s, t = obs.service_s, policy.target_wait_s
    per_busy = 1 + math.floor((t - s / 2) / s) if t >= s / 2 else 0
    per_new = max(1, 1 + math.floor((t - policy.cold_start_s) / s))
    left = max(0, obs.queued - obs.in_flight * per_busy)
    return obs.in_flight + math.ceil(left / per_new)


def split_capacity(desired: int, policy: PoolPolicy) -> tuple[int, int]:
    """``(on_demand, spot)`` for ``desired`` workers: the protected on-demand base first,
    then ``on_demand_share`` of the rest (rounded up) on on-demand, the others on spot."""
    base = min(desired, policy.on_demand_base)
    above = desired - base
    on_demand = base + math.ceil(above * policy.on_demand_share - 1e-9)
    return on_demand, desired - on_demand


# ---------------------------------------------------------------- the decision


def _target(obs: PoolObservation, policy: PoolPolicy, idle_for: float) -> tuple[int, str]:
    """The pool's target before delays, and the term that set it."""
    cap = policy.max_workers
    forecast = idle_for < policy.idle_to_zero_s
    load = (
        workers_for_load(
            obs.arrival_rate, obs.service_s, policy.target_wait_s, policy.wait_quantile, cap
        )
        if forecast
        else 0
    )
    backlog = backlog_workers(obs, policy)
    terms = [  # on a tie the backlog names the reason
        (
            backlog,
            f"{obs.queued} queued, {obs.in_flight} running need {backlog} to start each "
            f"within {policy.target_wait_s:g} s (cold start {policy.cold_start_s:g} s)",
        ),
        (
            load,
            f"arrivals {obs.arrival_rate * 60:.3g}/min x {obs.service_s:.3g} s a job "
            f"need {load} for p{policy.wait_quantile * 100:g} wait <= {policy.target_wait_s:g} s",
        ),
    ]
    n, why = max(terms, key=lambda term: term[0])
    if n == 0:
        idle = forecast or math.isinf(idle_for)  # never busy: nothing to count from
        why = "no work" if idle else f"idle {idle_for:.0f} s >= {policy.idle_to_zero_s:g} s"
    if n < policy.min_workers:
        n, why = policy.min_workers, f"{why}; min_workers {policy.min_workers}"
    if n > cap:
        n, why = cap, f"{why}; capped at max_workers {cap}"
    return n, why


def _held(
    target: int, why: str, obs: PoolObservation, policy: PoolPolicy, prev: int, idle_for: float
) -> tuple[int, str]:
    """What the pool keeps whatever the target: while jobs wait it does not shrink (its
    workers are busy or still starting), and one worker stays until it has been idle
    for ``idle_to_zero_s``."""
    if obs.queued and target < prev <= policy.max_workers:
        return prev, f"{why}; no downscale while {obs.queued} queued"
    if prev > 0 and idle_for < policy.idle_to_zero_s and target < 1:
        return 1, f"{why}; one kept until idle {policy.idle_to_zero_s:g} s"
    return target, why


def decide(
    pool: str, obs: PoolObservation, policy: PoolPolicy, memory: PoolMemory, now: float
) -> Decision:
    """One pool's decision (see the module's docstring)."""
    busy_at = now if obs.queued or obs.in_flight else memory.busy_at
    idle_for = math.inf if busy_at is None else now - busy_at
    prev = memory.desired
    target, why = _held(*_target(obs, policy, idle_for), obs, policy, prev, idle_for)
    desired, pending_since, note = prev, None, ""
    up = target > prev
    if target != prev:
        since = memory.pending_since if memory.pending_up == up else None
        pending_since = now if since is None else since
        delay = policy.upscale_delay_s if up else policy.downscale_delay_s
        if up and prev == 0 and obs.queued:
            delay = 0.0
        if now - pending_since >= delay:
            desired, pending_since = target, None
        else:
            left = delay - (now - pending_since)
            note = f"; {'up' if up else 'down'}scale to {target} in {left:.0f} s"
    verb = "up" if desired > prev else "down" if desired < prev else "hold"
    head = f"hold {prev}" if verb == "hold" else f"{verb} {prev}->{desired}"
    reason = f"{head}: {why}{note}"
    on_demand, spot = split_capacity(desired, policy)
    mem = replace(
        memory, desired=desired, pending_since=pending_since, pending_up=up, busy_at=busy_at
    )
    return Decision(pool, now, desired, on_demand, spot, prev, target, reason, obs, mem)


def autoscale(ctx: AutoscaleContext) -> dict[str, Decision]:
    """Every observed pool's decision at ``ctx.now``."""
    return {
        pool: decide(
            pool,
            obs,
            ctx.policies.get(pool, ctx.default),
            ctx.memory.get(pool, PoolMemory()),
            ctx.now,
        )
        for pool, obs in sorted(ctx.pools.items())
    }
