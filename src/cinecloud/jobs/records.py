"""Plain records the job store returns (no ORM objects leave the store)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ApiKeyRecord",
    "ArtifactRecord",
    "Billing",
    "EventRecord",
    "JobRecord",
    "LeaseLost",
    "NewJob",
    "NotFound",
    "ReusedIdempotencyKey",
    "TenantRecord",
    "WorkerRecord",
    "hash_key",
    "new_id",
    "request_hash",
]

IdFactory = Callable[[str], str]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def hash_key(plaintext: str) -> str:
    """API keys are 256-bit random tokens, so one SHA-256 is enough to store them;
    a slow password hash would only add latency to every request."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


class NotFound(LookupError):
    pass


class LeaseLost(RuntimeError):
    """The caller no longer holds the job's lease."""


class ReusedIdempotencyKey(ValueError):
    """The Idempotency-Key was used before with a different request."""


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant_id: str
    prefix: str
    name: str
    is_admin: bool
    created_at: float


@dataclass(frozen=True)
class ArtifactRecord:
    job_id: str
    name: str
    key: str
    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True)
class EventRecord:
    id: int
    job_id: str
    type: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    name: str
    capabilities: dict[str, Any]
    status: str
    registered_at: float
    last_seen_at: float
    gpu_stats: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant_id: str
    status: str
    model: str
    prompt: str
    params: dict[str, Any]
    seconds: str
    size: str
    seed: int
    priority: int
    created_at: float
    attempts: int
    max_attempts: int
    progress: int
    metadata: dict[str, Any] | None = None
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    lease_id: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    eta_s: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    timings: dict[str, float] | None = None
    gpu_seconds: float | None = None
    engine: dict[str, Any] | None = None
    qc: dict[str, Any] | None = None
    request_hash: str | None = None
    parallel: int | None = None
    deadline_at: float | None = None
    work_s: float | None = None
    gpu_type: str | None = None
    gpu_count: int | None = None
    spot: bool | None = None
    cost_usd: float | None = None
    billed_day: str | None = None
    # the newest denoise checkpoint's blob key and the step it was taken after
    checkpoint_key: str | None = None
    checkpoint_step: int | None = None
    traceparent: str | None = None
    artifacts: tuple[ArtifactRecord, ...] = field(default=())

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], artifacts: tuple[ArtifactRecord, ...] = ()
    ) -> JobRecord:
        names = cls.__dataclass_fields__.keys()
        values = {k: row[k] for k in names if k in row and k != "artifacts"}
        return cls(**values, artifacts=artifacts)


@dataclass(frozen=True)
class Billing:
    """What a completed job is billed: the GPU type and count it ran on, whether the
    worker was spot, and its price in dollars (from the price table at completion)."""

    gpu_type: str
    gpu_count: int
    spot: bool
    cost_usd: float

    def columns(self, completed_at: float) -> dict[str, Any]:
        """The job's bill columns; it is billed on the UTC day it completed."""
        day = datetime.fromtimestamp(completed_at, UTC).date().isoformat()
        return {**dataclasses.asdict(self), "billed_day": day}


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class NewJob:
    """What the API hands the store to create a job."""

    def __init__(
        self,
        *,
        tenant_id: str,
        model: str,
        prompt: str,
        params: dict[str, Any],
        seconds: str,
        size: str,
        seed: int,
        priority: int = 0,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        parallel: int | None = None,
        deadline_at: float | None = None,
        work_s: float | None = None,
        traceparent: str | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.model = model
        self.prompt = prompt
        self.params = params
        self.seconds = seconds
        self.size = size
        self.seed = seed
        self.priority = priority
        self.metadata = metadata
        self.idempotency_key = idempotency_key
        self.request_hash = request_hash
        self.parallel = parallel
        self.deadline_at = deadline_at
        self.work_s = work_s
        self.traceparent = traceparent
