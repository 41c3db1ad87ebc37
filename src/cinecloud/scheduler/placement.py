"""Placement: which queued job a leasing worker of width N takes.

A worker's width is its number of ranks (one video across N GPUs). A job may ask
for a parallel degree; it then runs only on a worker of exactly that width. A job
that asks for none runs on any width. Among the jobs a worker may take:

1. a job that has waited ``aging_s`` or longer comes first, the oldest of them
   first, whatever its size or priority: no stream of other jobs starves it;
2. otherwise the highest priority comes first;
3. within one priority, the tenant with the smallest fair share
   (:mod:`~cinecloud.scheduler.fairshare`), counting a cold model load
   (:mod:`~cinecloud.scheduler.affinity`) as if the tenant had used it already;
4. then by size:
   - a wide worker (N > 1) takes the job that saves the most seconds on it,
     ``work * (1 - 1 / S(N))`` less a cold load: long and high-resolution jobs of
     families that split well;
   - a narrow worker (N = 1) takes the smallest job (its work plus a cold load),
     leaving big ones to wide workers;
5. ties go to the older job, then the smaller id.

Jobs whose model another idle worker already holds are left to it (unless aged). Each
job ranked charges its work to its tenant and warms its model for the jobs ranked
after it, so one lease of several jobs is as fair as several leases of one.
:func:`plan` then keeps the first job and the ones that batch with it
(:mod:`~cinecloud.scheduler.batching`).

Everything here is pure: the caller passes the time, the candidates and the context.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from cinecloud.scheduler.affinity import Affinity
from cinecloud.scheduler.batching import batch_limit, same_batch
from cinecloud.scheduler.fairshare import FairShare
from cinecloud.scheduler.speedup import speedup

__all__ = [
    "Candidate",
    "InvalidParallel",
    "LeaseContext",
    "PlacementPolicy",
    "check_parallel",
    "choose",
    "compatible",
    "gain_s",
    "order",
    "plan",
]


class InvalidParallel(ValueError):
    """A requested parallel degree no worker can have."""


@dataclass(frozen=True)
class PlacementPolicy:
    """``aging_s``: the longest a job waits before it goes first;
    ``max_parallel``: the widest degree a request may ask for."""

    aging_s: float = 300.0
    max_parallel: int = 8

    def __post_init__(self) -> None:
        if self.aging_s <= 0:
            raise ValueError(f"aging_s must be positive (got {self.aging_s})")
        check_parallel(self.max_parallel, self.max_parallel)


@dataclass(frozen=True)
class Candidate:
    """A queued job as placement sees it.

    ``work_s`` is its estimated time on one GPU; ``alpha`` its family's speed-up
    parameter; ``parallel`` the degree it asked for, or None. ``batch`` is the shape
    jobs must share to run together and ``mem_bytes`` the memory one more such job
    needs in a batch (:mod:`~cinecloud.scheduler.batching`).
    """

    job_id: str
    priority: int
    created_at: float
    work_s: float
    alpha: float
    parallel: int | None = None
    tenant_id: str = ""
    model: str = ""
    batch: tuple[object, ...] = ()
    mem_bytes: float = 0.0


@dataclass(frozen=True)
class LeaseContext:
    """What one lease knows beyond the candidates: tenant shares and model affinity."""

    fair: FairShare = field(default_factory=FairShare)
    affinity: Affinity = field(default_factory=Affinity)

    def after(self, job: Candidate) -> LeaseContext:
        """The context once ``job`` is placed: its work charged to its tenant, its model
        loaded on this worker."""
        return LeaseContext(
            fair=self.fair.charge(job.tenant_id, job.work_s),
            affinity=self.affinity.warmed(job.model),
        )


def check_parallel(degree: int, max_parallel: int) -> None:
    """Raise :class:`InvalidParallel` unless ``degree`` is a power of two up to the max."""
    if degree < 1 or degree & (degree - 1):
        raise InvalidParallel(f"parallel must be a power of two: 1, 2, 4, ... (got {degree})")
    if degree > max_parallel:
        raise InvalidParallel(f"parallel must be at most {max_parallel} (got {degree})")


def compatible(job: Candidate, width: int) -> bool:
    """Whether a worker of ``width`` ranks may run ``job``."""
    return job.parallel is None or job.parallel == width


def gain_s(job: Candidate, width: int) -> float:
    """Seconds ``job`` saves on ``width`` ranks against one: ``work * (1 - 1 / S(N))``."""
    return job.work_s * (1.0 - 1.0 / speedup(width, job.alpha))


def _aged(job: Candidate, now: float, policy: PlacementPolicy) -> bool:
    return now - job.created_at >= policy.aging_s


def _key(
    job: Candidate, width: int, now: float, policy: PlacementPolicy, ctx: LeaseContext
) -> tuple[int, int, float, float, float, str]:
    if _aged(job, now, policy):
        return (0, 0, job.created_at, 0.0, 0.0, job.job_id)
    cold = ctx.affinity.cold_s(job.model)
    size = cold - gain_s(job, width) if width > 1 else job.work_s + cold
    share = ctx.fair.share(job.tenant_id, cold)
    return (1, -job.priority, share, size, job.created_at, job.job_id)


def _best(
    pool: Sequence[Candidate], width: int, now: float, policy: PlacementPolicy, ctx: LeaseContext
) -> Candidate:
    return min(pool, key=lambda job: _key(job, width, now, policy, ctx))


def _eligible(
    width: int,
    candidates: Sequence[Candidate],
    now: float,
    policy: PlacementPolicy,
    ctx: LeaseContext,
) -> list[Candidate]:
    """The jobs this worker may take and should not leave to a worker holding the model."""
    if width < 1:
        raise ValueError(f"worker width must be at least 1 (got {width})")
    return [
        job
        for job in candidates
        if compatible(job, width) and (_aged(job, now, policy) or not ctx.affinity.defer(job))
    ]


def _ranked(
    width: int, pool: Sequence[Candidate], now: float, policy: PlacementPolicy, ctx: LeaseContext
) -> Iterator[Candidate]:
    """Greedy, best first: each pick changes the shares and warm models the next sees.
    Candidates number a few dozen, so the quadratic walk is cheap; a lease of one job
    takes only the first step."""
    left = list(pool)
    while left:
        best = _best(left, width, now, policy, ctx)
        left.remove(best)
        yield best
        ctx = ctx.after(best)


def order(
    width: int,
    candidates: Sequence[Candidate],
    now: float,
    policy: PlacementPolicy,
    ctx: LeaseContext | None = None,
) -> list[Candidate]:
    """The jobs a worker of ``width`` ranks may take, best first (see the module doc)."""
    ctx = ctx or LeaseContext()
    return list(_ranked(width, _eligible(width, candidates, now, policy, ctx), now, policy, ctx))


def choose(
    width: int,
    candidates: Sequence[Candidate],
    now: float,
    policy: PlacementPolicy,
    ctx: LeaseContext | None = None,
) -> Candidate | None:
    """The one job a worker of ``width`` ranks should take now, or None."""
    ctx = ctx or LeaseContext()
    pool = _eligible(width, candidates, now, policy, ctx)
    return next(_ranked(width, pool, now, policy, ctx), None)


def plan(
    width: int,
    candidates: Sequence[Candidate],
    now: float,
    policy: PlacementPolicy,
    ctx: LeaseContext | None = None,
    *,
    max_jobs: int = 1,
    free_bytes: float | None = None,
) -> list[Candidate]:
    """The jobs to hand a worker that asks for up to ``max_jobs``: the best one and the
    best of those that batch with it, as many as its free memory holds."""
    ctx = ctx or LeaseContext()
    pool = _eligible(width, candidates, now, policy, ctx)
    head = next(_ranked(width, pool, now, policy, ctx), None)
    if head is None:
        return []
    limit = batch_limit(max_jobs, free_bytes, head.mem_bytes)
    same = [job for job in pool if job is not head and same_batch(job, head)]
    return [head, *islice(_ranked(width, same, now, policy, ctx.after(head)), limit - 1)]
