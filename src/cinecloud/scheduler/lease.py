"""The placement policy applied to a lease: queued job records to candidates, ranked.

The job store reads the queued candidates and claims the jobs; this module only
turns records into :class:`~cinecloud.scheduler.placement.Candidate` and picks among
them (the store's ``LeaseOrder``): the best job for the worker and, when it asks for
several, the ones that batch with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cinecloud.jobs import JobRecord
from cinecloud.scheduler.placement import Candidate, LeaseContext, PlacementPolicy, plan
from cinecloud.scheduler.service import JobShape, ServiceModels

__all__ = [
    "FamilyOf",
    "MemoryOf",
    "batch_key",
    "candidate",
    "job_shape",
    "lease_order",
    "params_shape",
]

#: The model family of a model id (the API's registry knows it).
FamilyOf = Callable[[str], str]
#: The GPU memory (bytes) one more job like this needs in a batch; 0 when unknown.
MemoryOf = Callable[[JobRecord], float]


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


def batch_key(job: JobRecord) -> tuple[object, ...]:
    """What jobs of one model must share to run as one batch: the engine's own key
    (``engine.batch.batch_key``, which this layer may not import) from the stored job."""
    shape = job_shape(job)
    return (
        shape.width,
        shape.height,
        shape.num_frames,
        shape.steps,
        shape.guidance_scale,
        job.params.get("step_cache", "off"),
        "input_image" not in job.params,  # text-to-video and image-to-video do not mix
    )


def candidate(
    job: JobRecord, family: str, models: ServiceModels, mem_bytes: float = 0.0
) -> Candidate:
    """``job`` as placement sees it: its one-GPU work, its family's ``alpha``, its
    tenant, its model and its batch shape."""
    return Candidate(
        job_id=job.id,
        priority=job.priority,
        created_at=job.created_at,
        work_s=models.work(family, job_shape(job)),
        alpha=models.get(family).alpha,
        parallel=job.parallel,
        tenant_id=job.tenant_id,
        model=job.model,
        batch=batch_key(job),
        mem_bytes=mem_bytes,
    )


def lease_order(
    width: int,
    policy: PlacementPolicy,
    models: ServiceModels,
    family_of: FamilyOf,
    ctx: LeaseContext | None = None,
    *,
    max_jobs: int = 1,
    free_bytes: float | None = None,
    memory_of: MemoryOf | None = None,
) -> Callable[[Sequence[JobRecord], float], list[str]]:
    """The job store's ``LeaseOrder`` for a worker of ``width`` ranks that asks for up
    to ``max_jobs`` (with ``free_bytes`` of GPU memory free, when it says)."""

    def rank(jobs: Sequence[JobRecord], now: float) -> list[str]:
        found = [
            candidate(j, family_of(j.model), models, memory_of(j) if memory_of else 0.0)
            for j in jobs
        ]
        chosen = plan(width, found, now, policy, ctx, max_jobs=max_jobs, free_bytes=free_bytes)
        return [c.job_id for c in chosen]

    return rank
