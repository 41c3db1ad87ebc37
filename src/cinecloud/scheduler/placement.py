"""Placement: which queued job a leasing worker of width N takes.

A worker's width is its number of ranks (one video across N GPUs). A job may ask
for a parallel degree; it then runs only on a worker of exactly that width. A job
that asks for none runs on any width. Among the jobs a worker may take:

1. a job that has waited ``aging_s`` or longer comes first, the oldest of them
   first, whatever its size or priority: no stream of other jobs starves it;
2. otherwise the highest priority comes first; within one priority
   - a wide worker (N > 1) takes the job that saves the most seconds on it,
     ``work * (1 - 1 / S(N))``: long and high-resolution jobs of families that split
     well;
   - a narrow worker (N = 1) takes the smallest job, leaving big ones to wide
     workers;
3. ties go to the older job, then the smaller id.

Everything here is pure: the caller passes the time and the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cinecloud.scheduler.speedup import speedup

__all__ = [
    "Candidate",
    "InvalidParallel",
    "PlacementPolicy",
    "check_parallel",
    "choose",
    "compatible",
    "gain_s",
    "order",
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
    parameter; ``parallel`` the degree it asked for, or None.
    """

    job_id: str
    priority: int
    created_at: float
    work_s: float
    alpha: float
    parallel: int | None = None


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


def _key(
    job: Candidate, width: int, now: float, policy: PlacementPolicy
) -> tuple[int, float, int, float, float, str]:
    if now - job.created_at >= policy.aging_s:
        return (0, job.created_at, 0, 0.0, job.created_at, job.job_id)
    size = -gain_s(job, width) if width > 1 else job.work_s
    return (1, 0.0, -job.priority, size, job.created_at, job.job_id)


def order(
    width: int, candidates: Sequence[Candidate], now: float, policy: PlacementPolicy
) -> list[Candidate]:
    """The jobs a worker of ``width`` ranks may take, best first (see the module doc)."""
    if width < 1:
        raise ValueError(f"worker width must be at least 1 (got {width})")
    fits = [job for job in candidates if compatible(job, width)]
    return sorted(fits, key=lambda job: _key(job, width, now, policy))


def choose(
    width: int, candidates: Sequence[Candidate], now: float, policy: PlacementPolicy
) -> Candidate | None:
    """The one job a worker of ``width`` ranks should take now, or None."""
    best = order(width, candidates, now, policy)
    return best[0] if best else None
