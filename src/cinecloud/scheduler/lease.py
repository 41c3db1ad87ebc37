"""The placement policy applied to a lease: queued job records to candidates, ranked.

The job store reads the queued candidates and claims the jobs; this module only
turns records into :class:`~cinecloud.scheduler.placement.Candidate` and orders
them (the store's ``LeaseOrder``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cinecloud.jobs import JobRecord
from cinecloud.scheduler.placement import Candidate, PlacementPolicy, order
from cinecloud.scheduler.service import JobShape, ServiceModels

__all__ = ["FamilyOf", "candidate", "job_shape", "lease_order", "params_shape"]

#: The model family of a model id (the API's registry knows it).
FamilyOf = Callable[[str], str]


def job_shape(job: JobRecord) -> JobShape:
    """What ``job``'s work depends on, from its stored parameters and size.

    Jobs stored by the API always carry every field; a field a job lacks counts as 1
    (0 for the guidance scale: one branch).
    """
    return params_shape(job.params, job.size)


def params_shape(params: Mapping[str, Any], size: str) -> JobShape:
    """:func:`job_shape` from a job's stored ``params`` and ``size`` alone."""
    p = params
    width, _, height = size.partition("x")
    return JobShape(
        width=int(p.get("width", width or 1)),
        height=int(p.get("height", height or 1)),
        num_frames=int(p.get("num_frames", 1)),
        steps=int(p.get("steps", 1)),
        guidance_scale=float(p.get("guidance_scale", 0.0)),
    )


def candidate(job: JobRecord, family: str, models: ServiceModels) -> Candidate:
    """``job`` as placement sees it: its one-GPU work and its family's ``alpha``."""
    return Candidate(
        job_id=job.id,
        priority=job.priority,
        created_at=job.created_at,
        work_s=models.work(family, job_shape(job)),
        alpha=models.get(family).alpha,
        parallel=job.parallel,
    )


def lease_order(
    width: int, policy: PlacementPolicy, models: ServiceModels, family_of: FamilyOf
) -> Callable[[Sequence[JobRecord], float], list[str]]:
    """The job store's ``LeaseOrder`` for a worker of ``width`` ranks."""

    def rank(jobs: Sequence[JobRecord], now: float) -> list[str]:
        found = [candidate(j, family_of(j.model), models) for j in jobs]
        return [c.job_id for c in order(width, found, now, policy)]

    return rank
