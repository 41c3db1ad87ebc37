"""Jobs: the job model, pure lifecycle transitions, the SQL store and leases."""

from cinecloud.jobs.accounts import AccountStore, WorkerStore
from cinecloud.jobs.db import make_engine, migrate
from cinecloud.jobs.lifecycle import TERMINAL, Action, InvalidTransition, JobStatus, transition
from cinecloud.jobs.records import (
    ApiKeyRecord,
    ArtifactRecord,
    Billing,
    EventRecord,
    JobRecord,
    LeaseLost,
    NewJob,
    NotFound,
    ReusedIdempotencyKey,
    TenantRecord,
    WorkerRecord,
    request_hash,
)
from cinecloud.jobs.store import JobStore, LeaseOrder

__all__ = [
    "TERMINAL",
    "AccountStore",
    "Action",
    "ApiKeyRecord",
    "ArtifactRecord",
    "Billing",
    "EventRecord",
    "InvalidTransition",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "LeaseLost",
    "LeaseOrder",
    "NewJob",
    "NotFound",
    "ReusedIdempotencyKey",
    "TenantRecord",
    "WorkerRecord",
    "WorkerStore",
    "make_engine",
    "migrate",
    "request_hash",
    "transition",
]
