"""Finished jobs in the worker protocol (docs/worker-protocol.md): ``complete`` (files
uploaded before, checked here) and ``deliveries`` (files and outcome of one or more jobs
in one multipart request, stored here). Both bill the job and complete it the same way
(:func:`_complete`). Every call is safe to retry."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import httpx
from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from cinecloud.api.auth import WorkerAuth
from cinecloud.api.bodies import capped
from cinecloud.api.errors import ApiError
from cinecloud.api.openapi import errors
from cinecloud.api.routers.checkpoints import drop_checkpoint
from cinecloud.api.routers.internal import MAX_UPLOAD_BYTES, State, lease_lost_error
from cinecloud.api.scheduling import billing_for
from cinecloud.api.state import AppState
from cinecloud.api.views import artifact_url
from cinecloud.delivery.prewarm import prewarm_plan, warm
from cinecloud.jobs import ArtifactRecord, JobRecord, LeaseLost, NotFound
from cinecloud.storage import InvalidKey, blob_key, validate_content_type
from cinecloud.storage.base import CHUNK

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/internal/v1", tags=["internal"], dependencies=[WorkerAuth], responses=errors(404, 409)
)


class Artifact(BaseModel):
    name: str
    key: str
    sha256: str
    size: int = Field(ge=0)
    content_type: str


class Outcome(BaseModel):
    """What a finished job reports besides its files (``complete`` and ``deliveries``)."""

    lease_id: str
    timings: dict[str, float] = {}
    gpu_seconds: float = Field(0.0, ge=0)
    seed: int | None = None
    engine: dict[str, Any] = {}
    # where it ran, for the bill; unset: what the worker registered with
    gpu_type: str | None = Field(None, max_length=100)
    gpu_count: int | None = Field(None, ge=1, le=1024)
    spot: bool | None = None
    qc: dict[str, Any] = {}  # the quality gate's readings (render.qc)


class Complete(Outcome):
    artifacts: list[Artifact]


class DeliveredFile(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    part: str = Field(min_length=1, max_length=100)  # the form field holding its bytes
    content_type: str = Field(max_length=200)


class Delivery(Outcome):
    job_id: str = Field(max_length=64)
    files: list[DeliveredFile] = Field(min_length=1, max_length=256)
    # progress events recorded before it completes (its "upload" stage)
    events: list[dict[str, Any]] = Field(default_factory=list, max_length=100)


class Deliveries(BaseModel):
    jobs: list[Delivery] = Field(min_length=1, max_length=64)


def _verify_artifacts(
    state: AppState, job: JobRecord, arts: list[Artifact]
) -> list[ArtifactRecord]:
    prefix = f"t/{job.tenant_id}/v/{job.id}/"
    records = []
    for a in arts:
        info = state.store.stat(a.key)
        if not a.key.startswith(prefix) or info is None:
            raise ApiError(
                400, "artifact_missing", f"artifact '{a.name}' was not uploaded", "artifacts"
            )
        if info.size != a.size or info.sha256 != a.sha256:
            raise ApiError(
                400,
                "artifact_mismatch",
                f"artifact '{a.name}' differs from its upload",
                "artifacts",
            )
        records.append(ArtifactRecord(job.id, a.name, a.key, a.sha256, a.size, a.content_type))
    return records


@router.post("/jobs/{job_id}/complete")
async def complete(
    job_id: str, body: Complete, state: State, background: BackgroundTasks
) -> dict[str, Any]:
    try:
        job = await run_in_threadpool(state.jobs.get_job, job_id)
        if job.status == "completed" and job.lease_id == body.lease_id:
            return {"status": "completed"}
        job = await run_in_threadpool(state.jobs.check_lease, job_id, body.lease_id)
        records = await run_in_threadpool(_verify_artifacts, state, job, body.artifacts)
        status = await _complete(state, job, body, records, background)
    except NotFound:
        raise ApiError(409, "lease_lost", f"job {job_id} no longer exists") from None
    except LeaseLost as exc:
        raise lease_lost_error(exc) from None
    return {"status": status}


async def _complete(
    state: AppState,
    job: JobRecord,
    body: Outcome,
    records: list[ArtifactRecord],
    background: BackgroundTasks,
) -> str:
    """Complete ``job`` with its stored files (raises LeaseLost); its new status."""
    bill = await run_in_threadpool(
        lambda: billing_for(
            state,
            job,
            body.gpu_seconds,
            gpu_type=body.gpu_type,
            gpu_count=body.gpu_count,
            spot=body.spot,
        )
    )
    done = await run_in_threadpool(
        lambda: state.jobs.complete(
            job.id,
            body.lease_id,
            artifacts=records,
            timings=body.timings,
            gpu_seconds=body.gpu_seconds,
            engine=body.engine,
            billing=bill,
            qc=body.qc or None,
        )
    )
    await run_in_threadpool(drop_checkpoint, state, job.id)  # no resume will need it
    state.events.notify()
    state.metrics.completed.labels(model=done.model).inc()
    spot = "true" if bill.spot else "false"
    state.metrics.billed_gpu_seconds.labels(bill.gpu_type, spot).inc(
        body.gpu_seconds * bill.gpu_count
    )
    state.metrics.dollars.labels(bill.gpu_type, spot).inc(bill.cost_usd)
    state.metrics.observe_timings(done.model, done.timings or {})
    state.metrics.gpu_seconds.labels(model=done.model).inc(done.gpu_seconds or 0.0)
    if state.cfg.delivery.prewarm:
        background.add_task(_prewarm, state, done)
    return done.status


#: Form fields of one delivery: its manifest and up to this many files.
MAX_DELIVERY_FILES = 64 * 256


_DELIVERIES_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["manifest"],
                "properties": {
                    "manifest": {
                        "type": "string",
                        "description": "Deliveries as JSON: {'jobs': [{job_id, lease_id, "
                        "files: [{name, part, content_type}], events, timings, ...}]}",
                    }
                },
                # each file's bytes, in the field its manifest entry names
                "additionalProperties": {"type": "string", "format": "binary"},
            }
        }
    },
}


@router.post(
    "/deliveries",
    responses=errors(400, 413),
    openapi_extra={"requestBody": _DELIVERIES_BODY},
)
async def deliveries(request: Request, state: State, background: BackgroundTasks) -> dict[str, Any]:
    """Finished jobs' files and outcomes in one request (multipart/form-data: a
    ``manifest`` field holding :class:`Deliveries` as JSON, and each file in the field
    its entry names): each job's files are stored and the job completed, as ``uploads``,
    the blob PUTs and ``complete`` would, in one round trip instead of one per file.
    Each job is answered on its own (``{"status": ...}`` or ``{"error": {...}}``): one
    whose lease was lost does not fail the others. Safe to retry."""
    started = time.monotonic()
    try:
        form = await capped(request, MAX_UPLOAD_BYTES).form(
            max_files=MAX_DELIVERY_FILES, max_fields=1
        )
    except ApiError:
        raise
    except Exception as exc:  # the multipart parser raises several types
        raise ApiError(400, "invalid_form", f"malformed form data: {exc}") from None
    try:
        raw = form.get("manifest")
        if not isinstance(raw, str):
            raise ApiError(400, "invalid_form", "a 'manifest' field is required", "manifest")
        try:
            manifest = Deliveries.model_validate_json(raw)
        except ValidationError as exc:
            raise ApiError(400, "invalid_manifest", _first_error(exc), "manifest") from None
        parts = {k: v for k, v in form.items() if isinstance(v, UploadFile)}
        received_s = time.monotonic() - started
        out = {
            i.job_id: await _deliver(state, i, parts, received_s, background) for i in manifest.jobs
        }
    finally:
        await form.close()
    return {"jobs": out}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


async def _deliver(
    state: AppState,
    item: Delivery,
    parts: dict[str, UploadFile],
    received_s: float,
    background: BackgroundTasks,
) -> dict[str, Any]:
    """Store one job's files and complete it; its answer in ``deliveries``. Its
    "upload" timing (the worker's wait to send) gains the request's receiving and the
    storing of its files."""
    try:
        job = await run_in_threadpool(state.jobs.get_job, item.job_id)
        if job.status == "completed" and job.lease_id == item.lease_id:
            return {"status": "completed"}  # a retry of a delivery that went through
        job = await run_in_threadpool(state.jobs.check_lease, item.job_id, item.lease_id)
        if item.events:
            ttl = state.cfg.queue.lease_ttl_s
            await run_in_threadpool(state.jobs.progress, job.id, item.lease_id, item.events, ttl)
        storing = time.monotonic()
        records = await run_in_threadpool(_store_files, state, job, item.files, parts)
        spent = received_s + time.monotonic() - storing
        item.timings["upload"] = item.timings.get("upload", 0.0) + spent
        try:
            return {"status": await _complete(state, job, item, records, background)}
        except LeaseLost:  # canceled while its files were written: keep none of them
            for r in records:
                await run_in_threadpool(state.store.delete, r.key)
            raise
    except NotFound:
        return _error("lease_lost", f"job {item.job_id} no longer exists")
    except LeaseLost as exc:
        return _error("lease_lost", str(exc))
    except ApiError as exc:
        return _error(exc.code, exc.message)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _store_files(
    state: AppState, job: JobRecord, files: list[DeliveredFile], parts: dict[str, UploadFile]
) -> list[ArtifactRecord]:
    records = []
    for f in files:
        upload = parts.get(f.part)
        if upload is None:
            raise ApiError(400, "invalid_manifest", f"no form field '{f.part}' for '{f.name}'")
        try:
            key = blob_key(job.tenant_id, job.id, f.name)
        except InvalidKey as exc:
            raise ApiError(400, "invalid_name", str(exc)) from None
        try:
            ctype = validate_content_type(f.content_type)
        except ValueError as exc:
            raise ApiError(400, "invalid_content_type", str(exc)) from None
        upload.file.seek(0)
        chunks = iter(functools.partial(upload.file.read, CHUNK), b"")
        info = state.store.put_stream(key, chunks, ctype, max_bytes=MAX_UPLOAD_BYTES)
        records.append(ArtifactRecord(job.id, f.name, key, info.sha256, info.size, ctype))
    return records


def _prewarm(state: AppState, job: JobRecord) -> None:
    """Fetch the job's first-viewed files through the edge (after the reply is sent)."""
    keys = {a.name: a.key for a in job.artifacts}
    urls = [artifact_url(state, keys[name]) for name in prewarm_plan(keys)]
    started = time.perf_counter()
    with httpx.Client(timeout=60.0) as client:
        results = warm(urls, client)
    state.jobs.add_timing(job.id, "cdn_warm", time.perf_counter() - started)
    failed = [r.url.split("?")[0] for r in results if r.status not in (200, 206)]
    if failed:
        log.warning("job %s: pre-warm failed for %s", job.id, failed)
