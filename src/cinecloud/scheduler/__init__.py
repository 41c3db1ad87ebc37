"""Scheduling: pure policies over a context, and the glue that applies them.

- :mod:`~cinecloud.scheduler.speedup`: ``S(N) = N / (1 + alpha (N - 1))`` and the fit
  of ``alpha`` from timings;
- :mod:`~cinecloud.scheduler.service`: a job's work in one-GPU seconds and the
  per-family table (``alpha.json``);
- :mod:`~cinecloud.scheduler.placement`: which queued job a worker of N ranks takes;
- :mod:`~cinecloud.scheduler.lease`: the placement policy as the job store's lease order.
"""

from cinecloud.scheduler.lease import FamilyOf, candidate, job_shape, lease_order
from cinecloud.scheduler.placement import (
    Candidate,
    InvalidParallel,
    PlacementPolicy,
    check_parallel,
    choose,
    compatible,
    gain_s,
    order,
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
    "AlphaFitError",
    "Candidate",
    "FamilyModel",
    "FamilyOf",
    "InvalidParallel",
    "JobShape",
    "Measurement",
    "PlacementPolicy",
    "ServiceModels",
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
    "parse_measurement",
    "parse_service_models",
    "service_time",
    "speedup",
    "with_alpha",
]
