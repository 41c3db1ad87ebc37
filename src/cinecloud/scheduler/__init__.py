"""Scheduling: pure policies over a context, and the glue that applies them.

- :mod:`~cinecloud.scheduler.speedup`: ``S(N) = N / (1 + alpha (N - 1))`` and the fit
  of ``alpha`` from timings;
- :mod:`~cinecloud.scheduler.service`: a job's work in one-GPU seconds and the
  per-family table (``alpha.json``);
- :mod:`~cinecloud.scheduler.priority`: priority classes on requests;
- :mod:`~cinecloud.scheduler.deadline`: the ``Cancel-After`` header;
- :mod:`~cinecloud.scheduler.fairshare`: weighted fair share between tenants;
- :mod:`~cinecloud.scheduler.affinity`: the model a worker holds, and the cost of a load;
- :mod:`~cinecloud.scheduler.batching`: compatible jobs one worker runs together;
- :mod:`~cinecloud.scheduler.placement`: which queued jobs a worker of N ranks takes;
- :mod:`~cinecloud.scheduler.lease`: the placement policy as the job store's lease order.
"""

from cinecloud.scheduler.affinity import Affinity
from cinecloud.scheduler.batching import batch_limit, same_batch
from cinecloud.scheduler.deadline import InvalidDeadline, parse_cancel_after
from cinecloud.scheduler.fairshare import FairShare, resolve_weights
from cinecloud.scheduler.lease import (
    FamilyOf,
    MemoryOf,
    batch_key,
    candidate,
    job_shape,
    lease_order,
)
from cinecloud.scheduler.placement import (
    Candidate,
    InvalidParallel,
    LeaseContext,
    PlacementPolicy,
    check_parallel,
    choose,
    compatible,
    gain_s,
    order,
    plan,
)
from cinecloud.scheduler.priority import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    PRIORITY_CLASSES,
    InvalidPriority,
    parse_priority,
)
from cinecloud.scheduler.service import (
    FamilyModel,
    JobShape,
    ServiceModels,
    guidance_branches,
    job_work,
    load_service_models,
    parse_service_models,
    with_alpha,
)
from cinecloud.scheduler.speedup import (
    AlphaFitError,
    Measurement,
    fit_alpha,
    parse_measurement,
    service_time,
    speedup,
)

__all__ = [
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "PRIORITY_CLASSES",
    "Affinity",
    "AlphaFitError",
    "Candidate",
    "FairShare",
    "FamilyModel",
    "FamilyOf",
    "InvalidDeadline",
    "InvalidParallel",
    "InvalidPriority",
    "JobShape",
    "LeaseContext",
    "Measurement",
    "MemoryOf",
    "PlacementPolicy",
    "ServiceModels",
    "batch_key",
    "batch_limit",
    "candidate",
    "check_parallel",
    "choose",
    "compatible",
    "fit_alpha",
    "gain_s",
    "guidance_branches",
    "job_shape",
    "job_work",
    "lease_order",
    "load_service_models",
    "order",
    "parse_cancel_after",
    "parse_measurement",
    "parse_priority",
    "parse_service_models",
    "plan",
    "resolve_weights",
    "same_batch",
    "service_time",
    "speedup",
    "with_alpha",
]
