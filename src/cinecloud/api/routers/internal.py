"""The worker protocol (docs/worker-protocol.md): register, heartbeat, lease,
events, uploads, fail (``complete`` and ``deliveries`` are in
:mod:`cinecloud.api.routers.completion`, ``checkpoint`` and ``release`` in
:mod:`cinecloud.api.routers.checkpoints`). Every call is safe to retry."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cinecloud.api.auth import WorkerAuth
from cinecloud.api.errors import ApiError
from cinecloud.api.openapi import errors
from cinecloud.api.routers.checkpoints import (
    CHECKPOINT_INVALID,
    STOPPING,
    checkpoint_inputs,
    drop_checkpoint,
)
from cinecloud.api.scheduling import LeaseAsk, placement
from cinecloud.api.state import AppState, get_state
from cinecloud.api.views import artifact_url
from cinecloud.delivery import SignatureExpired, SignatureInvalid, sign, verify
from cinecloud.jobs import JobRecord, LeaseLost
from cinecloud.jobs.timeline import queued_since
from cinecloud.storage import InvalidKey, S3Store, blob_key, validate_content_type
from cinecloud.telemetry.tracing import SpanRecord, record_span

__all__ = ["router", "upload_router"]

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/internal/v1", tags=["internal"], dependencies=[WorkerAuth], responses=errors(404, 409)
)
upload_router = APIRouter(
    prefix="/internal/v1", tags=["internal"], responses=errors(403, 404, 409, 410, 413)
)
State = Annotated[AppState, Depends(get_state)]
MAX_UPLOAD_BYTES = 8 * 1024**3


class Register(BaseModel):
    name: str = Field("", max_length=200)
    worker_id: str | None = Field(None, max_length=64)
    capabilities: dict[str, Any] = {}


class LeaseRef(BaseModel):
    job_id: str
    lease_id: str


class GpuStat(BaseModel):
    """One GPU's NVML sample (``telemetry.gpu.GpuSample``)."""

    # numbers as JSON numbers: no true for 1 or "8" for 8
    model_config = ConfigDict(strict=True)

    index: int = Field(ge=0)
    name: str = Field("", max_length=200)
    uuid: str = Field("", max_length=100)
    utilization: float = Field(ge=0, le=1)
    memory_used: int = Field(ge=0)
    memory_total: int = Field(ge=0)


class Heartbeat(BaseModel):
    jobs: list[LeaseRef] = []
    status: str = "idle"
    # None: the worker does not sample its GPUs (an older worker); []: it has none
    gpus: list[GpuStat] | None = Field(None, max_length=64)


class LeaseRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    worker_id: str
    models: list[str]
    max_jobs: int = Field(1, ge=1, le=64)
    wait_s: float = Field(0.0, ge=0, le=60)
    # the worker's ranks: one video across this many GPUs (worker.parallel)
    width: int = Field(1, ge=1, le=1024)
    # the models it holds in memory now (the rest of ``models`` it loads first);
    # None: it holds them all
    loaded: list[str] | None = Field(None, max_length=256)
    # GPU memory free for more jobs in a batch (bytes); None: max_jobs alone bounds it
    free_memory: float | None = Field(None, ge=0)


class Events(BaseModel):
    lease_id: str
    events: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)


class JobEvents(Events):
    job_id: str = Field(max_length=64)


class ManyEvents(BaseModel):
    jobs: list[JobEvents] = Field(min_length=1, max_length=256)


class UploadRequest(BaseModel):
    lease_id: str
    names: list[str] = Field(min_length=1, max_length=256)


class Fail(BaseModel):
    lease_id: str
    code: str = Field(max_length=64)
    message: str = Field(max_length=4000)
    retryable: bool = False


def lease_lost_error(exc: LeaseLost) -> ApiError:
    return ApiError(409, "lease_lost", str(exc))


def _run_job(state: AppState, job: JobRecord) -> dict[str, Any]:
    params = {"prompt": job.prompt, "seed": job.seed, **job.params}
    inputs = {}
    if "input_image" in params:
        inputs["image"] = artifact_url(state, params.pop("input_image"))
    inputs.update(checkpoint_inputs(state, job))  # resume from its newest checkpoint
    return {
        "job_id": job.id,
        "lease_id": job.lease_id,
        "attempt": job.attempts,
        "model": job.model,
        "params": params,
        "inputs": inputs,
        "lease_ttl_s": state.cfg.queue.lease_ttl_s,
        "queued_at": job.created_at,
        "traceparent": job.traceparent,
    }


def _trace_queue_wait(job: JobRecord, since: float) -> None:
    """The job's wait in the queue, as a span of its trace (recorded now, at the lease)."""
    if job.traceparent and job.started_at is not None:
        attrs: dict[str, str | int] = {
            "cinecloud.job_id": job.id,
            "cinecloud.attempt": job.attempts,
        }
        span = SpanRecord("queue_wait", since, job.started_at, attrs)
        record_span(span, job.traceparent, kind="consumer")


@router.post("/workers/register")
async def register(body: Register, state: State) -> dict[str, Any]:
    wid = await run_in_threadpool(
        state.workers.register, body.worker_id, body.name, body.capabilities
    )
    q = state.cfg.queue
    return {
        "worker_id": wid,
        "heartbeat_interval_s": q.heartbeat_interval_s,
        "lease_ttl_s": q.lease_ttl_s,
        # where finished jobs' files go: straight into the bucket (``uploads``), or
        # through this server, a job's or a batch's in one ``deliveries`` request
        "uploads": "direct" if isinstance(state.store, S3Store) else "deliveries",
    }


@router.post("/workers/{worker_id}/heartbeat")
async def heartbeat(worker_id: str, body: Heartbeat, state: State) -> dict[str, Any]:
    ttl = state.cfg.queue.lease_ttl_s
    gpus = None if body.gpus is None else {"gpus": [g.model_dump() for g in body.gpus]}
    known = await run_in_threadpool(state.workers.touch, worker_id, body.status, gpus)
    if not known:
        raise ApiError(
            404, "worker_not_found", f"worker '{worker_id}' is not registered; register again"
        )
    lost = await run_in_threadpool(
        state.jobs.extend_leases, [(j.job_id, j.lease_id) for j in body.jobs], ttl
    )
    return {"cancel": lost, "lease_ttl_s": ttl}


def _stopping(state: AppState, worker_id: str) -> bool:
    """Whether the worker said it is stopping (a heartbeat, or a release for it)."""
    worker = state.workers.get(worker_id)
    return worker is not None and worker.status == STOPPING


@router.post("/leases")
async def lease(body: LeaseRequest, state: State) -> dict[str, Any]:
    q = state.cfg.queue
    deadline = state.clock() + min(body.wait_s, q.lease_long_poll_s)
    ask = LeaseAsk(
        body.worker_id, body.models, body.width, body.max_jobs, body.loaded, body.free_memory
    )
    plan = await run_in_threadpool(placement, state, ask)
    while True:
        if await run_in_threadpool(_stopping, state, body.worker_id):
            return {"jobs": []}
        jobs = await run_in_threadpool(
            lambda: state.jobs.lease(
                body.worker_id,
                body.models,
                ttl_s=q.lease_ttl_s,
                max_jobs=body.max_jobs,
                width=body.width,
                order=plan.order,
                candidates=state.cfg.scheduler.candidates,
                tenants=plan.tenants,
                per_tenant=plan.per_tenant,
            )
        )
        remaining = deadline - state.clock()
        if jobs or remaining <= 0:
            break
        await state.notifier.wait(min(remaining, 0.5))
    if jobs:
        await run_in_threadpool(state.workers.touch, body.worker_id, "busy")
        for job in jobs:
            if job.traceparent:
                since = await run_in_threadpool(queued_since, state.jobs.engine, job)
                _trace_queue_wait(job, since)
    return {"jobs": [_run_job(state, j) for j in jobs]}


@router.post("/jobs/{job_id}/events")
async def events(job_id: str, body: Events, state: State) -> dict[str, Any]:
    try:
        await run_in_threadpool(
            state.jobs.progress, job_id, body.lease_id, body.events, state.cfg.queue.lease_ttl_s
        )
    except LeaseLost as exc:
        raise lease_lost_error(exc) from None
    state.events.notify()
    return {"cancel": False}


@router.post("/events")
async def many_events(body: ManyEvents, state: State) -> dict[str, Any]:
    """Progress events of several held jobs in one request (a batch's, each step):
    ``lost`` lists the jobs whose lease is gone (the worker stops them); the others'
    events are recorded as ``/jobs/{id}/events`` would."""
    items = [(item.job_id, item.lease_id, item.events) for item in body.jobs]
    lost = await run_in_threadpool(state.jobs.progress_many, items, state.cfg.queue.lease_ttl_s)
    state.events.notify()
    return {"lost": lost}


def _upload_uri(key: str, lease_id: str) -> str:
    return f"/internal/v1/blobs/{key}?lease={lease_id}"


@router.post("/jobs/{job_id}/uploads")
async def uploads(job_id: str, body: UploadRequest, state: State) -> dict[str, Any]:
    try:
        job = await run_in_threadpool(state.jobs.check_lease, job_id, body.lease_id)
    except LeaseLost as exc:
        raise lease_lost_error(exc) from None
    ttl = state.cfg.delivery.upload_ttl_s
    expires = int(state.clock()) + ttl
    base = state.cfg.server.public_url.rstrip("/")
    out: dict[str, dict[str, Any]] = {}
    for name in body.names:
        try:
            key = blob_key(job.tenant_id, job.id, name)
        except InvalidKey as exc:
            raise ApiError(400, "invalid_name", str(exc), "names") from None
        if isinstance(state.store, S3Store):
            # Straight into the bucket: the bytes skip the control plane, and the worker
            # holds no bucket credentials. ``complete`` checks what arrived (size, sha256)
            # and the lease, as the PUT below does for the local store.
            url = await run_in_threadpool(state.store.presigned_put, key, ttl)
            out[name] = {"key": key, "url": url, "direct": True}
            continue
        uri = _upload_uri(key, body.lease_id)
        sig = sign(uri, expires, state.cfg.delivery.secret)
        out[name] = {"key": key, "url": f"{base}{uri}&e={expires}&s={sig}"}
    return {"uploads": out}


async def _spool(request: Request, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    size = 0
    with tempfile.NamedTemporaryFile(dir=directory, delete=False) as fh:
        path = Path(fh.name)
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise ApiError(
                        413, "upload_too_large", f"upload is over {MAX_UPLOAD_BYTES} bytes"
                    )
                fh.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return path


def _job_of_key(key: str) -> str:
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != "t" or parts[2] != "v":
        raise ApiError(400, "invalid_key", f"'{key}' is not a job file key")
    return parts[3]


@upload_router.put("/blobs/{key:path}")
async def put_blob(
    key: str, request: Request, state: State, lease: str, e: str, s: str
) -> dict[str, Any]:
    try:
        verify(_upload_uri(key, lease), e, s, secret=state.cfg.delivery.secret, now=state.clock())
    except SignatureInvalid:
        raise ApiError(403, "invalid_signature", "upload URL signature is not valid") from None
    except SignatureExpired:
        raise ApiError(410, "url_expired", "upload URL has expired") from None
    job_id = _job_of_key(key)
    try:
        await run_in_threadpool(state.jobs.check_lease, job_id, lease)
    except LeaseLost as exc:
        raise lease_lost_error(exc) from None
    try:
        ctype = validate_content_type(
            request.headers.get("content-type", "application/octet-stream")
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_content_type", str(exc), "Content-Type") from None
    tmp = await _spool(request, state.cfg.server.home / "tmp")
    try:
        info = await run_in_threadpool(state.store.put_file, key, tmp, ctype)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        # A cancel may have landed while the bytes were in flight: keep nothing then.
        await run_in_threadpool(state.jobs.check_lease, job_id, lease)
    except LeaseLost as exc:
        await run_in_threadpool(state.store.delete, key)
        raise lease_lost_error(exc) from None
    return {"key": key, "size": info.size, "sha256": info.sha256, "content_type": info.content_type}


@router.post("/jobs/{job_id}/fail")
async def fail(job_id: str, body: Fail, state: State) -> dict[str, Any]:
    try:
        job = await run_in_threadpool(
            lambda: state.jobs.fail(
                job_id,
                body.lease_id,
                code=body.code,
                message=body.message,
                retryable=body.retryable,
            )
        )
    except LeaseLost as exc:
        raise lease_lost_error(exc) from None
    if body.code == CHECKPOINT_INVALID:  # the retry starts afresh
        await run_in_threadpool(drop_checkpoint, state, job_id)
    state.events.notify()
    if job.status == "failed":
        state.metrics.failed.labels(model=job.model, code=body.code).inc()
        await run_in_threadpool(state.store.delete_prefix, f"t/{job.tenant_id}/v/{job.id}/")
    else:
        state.notifier.notify()
    return {"status": job.status}
