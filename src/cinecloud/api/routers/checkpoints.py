"""The worker protocol's ``checkpoint`` and ``release`` calls (docs/worker-protocol.md).

``checkpoint`` points a job at a denoise checkpoint the worker has uploaded under the
job's key prefix (``.../checkpoints/``, through the ``uploads`` call like an artifact).
``release`` gives a lease back when the worker is preempted. The next lease of the job
carries its checkpoint as the ``checkpoint`` input, a signed URL (docs/checkpoints.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cinecloud.api.auth import WorkerAuth
from cinecloud.api.errors import ApiError
from cinecloud.api.openapi import errors
from cinecloud.api.state import AppState, get_state
from cinecloud.api.views import artifact_url
from cinecloud.jobs import JobRecord, LeaseLost, NotFound
from cinecloud.jobs.checkpoints import CheckpointLedger, NewCheckpoint

__all__ = ["CHECKPOINT_INVALID", "checkpoint_inputs", "drop_checkpoint", "router"]

router = APIRouter(
    prefix="/internal/v1", tags=["internal"], dependencies=[WorkerAuth], responses=errors(409)
)
State = Annotated[AppState, Depends(get_state)]

#: The ``fail`` code of a job whose checkpoint cannot resume it: the checkpoint is dropped.
CHECKPOINT_INVALID = "checkpoint_invalid"


class CheckpointBody(BaseModel):
    lease_id: str
    step: int = Field(ge=1)
    total_steps: int = Field(ge=1)
    key: str = Field(max_length=512)
    sha256: str = Field(min_length=64, max_length=64)
    size: int = Field(ge=0)


class ReleaseBody(BaseModel):
    lease_id: str
    reason: str = Field("preempted", max_length=64)


def checkpoint_inputs(state: AppState, job: JobRecord) -> dict[str, str]:
    """A leased job's ``checkpoint`` input (a signed URL), when it has one."""
    if job.checkpoint_key is None:
        return {}
    return {"checkpoint": artifact_url(state, job.checkpoint_key)}


def drop_checkpoint(state: AppState, job_id: str) -> None:
    """Forget the job's checkpoint and remove its blob (the job is done with it)."""
    key = CheckpointLedger(state.jobs).forget(job_id)
    if key is not None:
        state.store.delete(key)


def _check(state: AppState, job: JobRecord, body: CheckpointBody) -> None:
    """400 unless ``body`` names a stored checkpoint of ``job``, as uploaded."""
    prefix = f"t/{job.tenant_id}/v/{job.id}/checkpoints/"
    if not body.key.startswith(prefix) or ".." in body.key.split("/"):
        raise ApiError(400, "invalid_checkpoint", f"key must start with {prefix}", "key")
    steps = job.params.get("steps")
    if body.step > body.total_steps or (steps is not None and body.total_steps != steps):
        message = f"step {body.step}/{body.total_steps} does not fit a job of {steps} steps"
        raise ApiError(400, "invalid_checkpoint", message, "step")
    info = state.store.stat(body.key)
    if info is None:
        raise ApiError(400, "checkpoint_missing", "the checkpoint was not uploaded", "key")
    if info.size != body.size or info.sha256 != body.sha256:
        raise ApiError(400, "checkpoint_mismatch", "the checkpoint differs from its upload", "key")


@router.post("/jobs/{job_id}/checkpoint")
async def checkpoint(job_id: str, body: CheckpointBody, state: State) -> dict[str, Any]:
    ledger = CheckpointLedger(state.jobs)
    new = NewCheckpoint(body.key, body.step, body.total_steps, body.sha256, body.size)
    try:
        job = await run_in_threadpool(state.jobs.check_lease, job_id, body.lease_id)
        await run_in_threadpool(_check, state, job, body)
        record, unneeded = await run_in_threadpool(ledger.record, job_id, body.lease_id, new)
    except LeaseLost as exc:
        raise ApiError(409, "lease_lost", str(exc)) from None
    if unneeded is not None:
        await run_in_threadpool(state.store.delete, unneeded)
    state.events.notify()
    return {"step": record.step, "key": record.key}


#: Release reasons that say the worker is stopping (a spot notice, a scale-down): it is
#: marked ``stopping`` and leases nothing more until it registers again or says it is
#: ``busy`` or ``idle`` in a heartbeat.
DRAINING_REASONS = frozenset({"preempted", "worker stopping"})
STOPPING = "stopping"


def _mark_draining(state: AppState, job_id: str, lease_id: str) -> None:
    try:
        job = state.jobs.get_job(job_id)
    except NotFound:
        return  # the release answers for it
    if job.lease_id == lease_id and job.lease_owner:
        state.workers.touch(job.lease_owner, STOPPING)


@router.post("/jobs/{job_id}/release")
async def release(job_id: str, body: ReleaseBody, state: State) -> dict[str, Any]:
    ledger = CheckpointLedger(state.jobs)
    if body.reason in DRAINING_REASONS:
        # The worker is going away: its own long poll, in flight, must not lease the job
        # straight back (it would only give it back again).
        await run_in_threadpool(_mark_draining, state, job_id, body.lease_id)
    try:
        job = await run_in_threadpool(ledger.release, job_id, body.lease_id, body.reason)
    except LeaseLost as exc:
        raise ApiError(409, "lease_lost", str(exc)) from None
    state.events.notify()
    state.notifier.notify()  # a waiting worker may lease it at once
    return {"status": job.status, "checkpoint_step": job.checkpoint_step}
