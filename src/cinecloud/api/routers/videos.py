"""``/v1/videos``: create, retrieve, list, delete, cancel, content."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from cinecloud.api.auth import Caller
from cinecloud.api.bodies import capped, read_limited
from cinecloud.api.errors import ApiError, video_not_found
from cinecloud.api.images import read_input_image
from cinecloud.api.limits import Refusal, check_budget, check_quota
from cinecloud.api.openapi import errors
from cinecloud.api.routers.webhooks import add_request_webhook
from cinecloud.api.schemas import DeletedVideo, VideoCreate, VideoList, VideoObject
from cinecloud.api.state import AppState, get_state
from cinecloud.api.views import ARTIFACT_FOR_VARIANT, artifact_url, video_object
from cinecloud.api.webhook_loop import check_webhook_url
from cinecloud.config import TenantLimits
from cinecloud.engine.registry import ParamError, UnknownModel, resolve_params
from cinecloud.jobs import (
    TERMINAL,
    ApiKeyRecord,
    InvalidTransition,
    JobRecord,
    NewJob,
    NotFound,
    ReusedIdempotencyKey,
)
from cinecloud.jobs import request_hash as hash_request
from cinecloud.jobs.store import Admit
from cinecloud.jobs.usage import TenantUsage, UsageLedger
from cinecloud.scheduler import (
    InvalidDeadline,
    InvalidParallel,
    JobShape,
    check_parallel,
    parse_cancel_after,
)
from cinecloud.telemetry.tracing import submit_span

__all__ = ["router"]

router = APIRouter(prefix="/v1/videos", tags=["videos"])
State = Annotated[AppState, Depends(get_state)]
# the headers of a redirect to a video's file
_REDIRECT = {
    "description": "A signed URL of the file, valid for delivery.url_ttl_s",
    "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
}


async def _form_fields(request: Request, limit: int) -> tuple[dict[str, Any], UploadFile | None]:
    try:
        form = await capped(request, limit).form(max_files=1, max_fields=64)
    except ApiError:
        raise
    except Exception as exc:  # the multipart parser raises several types
        raise ApiError(400, "invalid_form", f"malformed form data: {exc}") from None
    data: dict[str, Any] = {}
    upload: UploadFile | None = None
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != "input_reference":
                raise ApiError(400, "invalid_form", f"unexpected file field '{name}'", name)
            upload = value
        else:
            data[name] = value
    if isinstance(data.get("metadata"), str):
        try:
            data["metadata"] = json.loads(data["metadata"])
        except ValueError:
            raise ApiError(
                400, "invalid_value", "metadata must be a JSON object", "metadata"
            ) from None
    return data, upload


async def _parse_create(request: Request, state: AppState) -> tuple[VideoCreate, UploadFile | None]:
    limit = state.cfg.api.max_body_bytes
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload = None
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body_too_large", f"request body is over {limit} bytes")
        data, upload = await _form_fields(request, limit)
    elif ctype in ("application/json", ""):
        raw = await read_limited(request, limit)
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "request body must be a JSON object")
    else:
        raise ApiError(415, "unsupported_media_type", f"unsupported content type '{ctype}'")
    try:
        return VideoCreate.model_validate(data), upload
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        code = "unknown_parameter" if err["type"] == "extra_forbidden" else "invalid_value"
        if param in ("parallel", "priority"):
            code = f"invalid_{param}"
        raise ApiError(400, code, f"{param}: {err['msg']}", param) from None


def _check_parallel(state: AppState, degree: int | None) -> None:
    if degree is None:
        return
    try:
        check_parallel(degree, state.cfg.scheduler.max_parallel)
    except InvalidParallel as exc:
        raise ApiError(400, "invalid_parallel", str(exc), "parallel") from None


def _check_prompts(state: AppState, body: VideoCreate) -> None:
    if not body.prompt.strip():
        raise ApiError(400, "invalid_prompt", "prompt must not be empty", "prompt")
    limit = state.cfg.api.max_prompt_chars
    if len(body.prompt) > limit:
        raise ApiError(
            400,
            "prompt_too_long",
            f"prompt is {len(body.prompt)} characters; the limit is {limit}",
            "prompt",
        )
    if body.negative_prompt and len(body.negative_prompt) > limit:
        raise ApiError(
            400,
            "prompt_too_long",
            f"negative_prompt is {len(body.negative_prompt)} characters; the limit is {limit}",
            "negative_prompt",
        )


def _new_job(state: AppState, caller_tenant: str, body: VideoCreate, idem: str | None) -> NewJob:
    _check_prompts(state, body)
    try:
        spec = state.registry.get(body.model)
    except UnknownModel as exc:
        raise ApiError(400, "model_not_found", str(exc.args[0]), "model") from None
    _check_parallel(state, body.parallel)
    seed = body.seed if body.seed is not None else state.seeds()
    try:
        params = resolve_params(
            spec,
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            size=body.size,
            seconds=body.seconds,
            num_frames=body.num_frames,
            fps=body.fps,
            steps=body.steps,
            guidance_scale=body.guidance_scale,
            seed=seed,
            step_cache=body.step_cache,
        )
    except ParamError as exc:
        raise ApiError(400, exc.code, str(exc), exc.param) from None
    resolved = {
        k: getattr(params, k)
        for k in (
            "negative_prompt",
            "width",
            "height",
            "num_frames",
            "fps",
            "steps",
            "guidance_scale",
            "step_cache",
        )
    }
    seconds = (
        str(body.seconds) if body.seconds is not None else f"{params.num_frames / params.fps:g}"
    )
    shape = JobShape(
        params.width, params.height, params.num_frames, params.steps, params.guidance_scale
    )
    return NewJob(
        tenant_id=caller_tenant,
        model=spec.id,
        prompt=body.prompt,
        params=resolved,
        seconds=seconds,
        size=f"{params.width}x{params.height}",
        seed=seed,
        priority=body.priority,
        parallel=body.parallel,
        metadata=body.metadata,
        idempotency_key=idem,
        request_hash=hash_request(body.model_dump()) if idem else None,
        # one-GPU seconds of work: what fair share charges the tenant when the job starts
        work_s=state.service.work(spec.family, shape),
    )


def _deadline(state: AppState, cancel_after: str | None) -> float | None:
    """The absolute deadline a ``Cancel-After`` header names (docs/scheduling.md)."""
    if cancel_after is None:
        return None
    try:
        return parse_cancel_after(cancel_after, state.clock(), state.cfg.scheduler.max_deadline_s)
    except InvalidDeadline as exc:
        raise ApiError(400, "invalid_cancel_after", str(exc), "Cancel-After") from None


async def _attach_image(state: AppState, new: NewJob, upload: UploadFile | None) -> None:
    """Check the model's image rule, validate the image and keep it for the worker."""
    rule = state.registry.get(new.model).input_image
    if upload is None:
        if rule == "required":
            raise ApiError(
                400,
                "input_reference_required",
                f"model '{new.model}' generates from an image: send input_reference",
                "input_reference",
            )
        return
    if rule == "none":
        raise ApiError(
            400,
            "input_reference_not_supported",
            f"model '{new.model}' generates from text only; input_reference is not accepted",
            "input_reference",
        )
    api = state.cfg.api
    image = await read_input_image(
        upload, max_bytes=api.max_image_bytes, max_pixels=api.max_image_pixels
    )
    key = f"t/{new.tenant_id}/in/{image.sha256}{image.ext}"
    await run_in_threadpool(state.store.put_bytes, key, image.data, image.content_type)
    new.params["input_image"] = key
    if new.request_hash:
        new.request_hash = hash_request({"hash": new.request_hash, "image": image.sha256})


async def _view(state: AppState, job: JobRecord) -> dict[str, Any]:
    position = await run_in_threadpool(state.jobs.queue_position, job)
    return video_object(state, job, position)


async def _get(state: AppState, job_id: str, tenant_id: str) -> JobRecord:
    try:
        return await run_in_threadpool(state.jobs.get_job, job_id, tenant_id)
    except NotFound:
        raise video_not_found(job_id) from None


def _refuse(state: AppState, refusal: Refusal | None) -> None:
    if refusal is not None:
        state.metrics.limited.labels(code=refusal.code).inc()
        raise refusal.error()


async def _admission(
    state: AppState, caller: ApiKeyRecord, idem: str | None
) -> tuple[TenantLimits, Admit | None, bool]:
    """The create rate and the quotas' early look (docs/reliability.md, "Abuse limits").

    Returns the tenant's limits, the quota check to repeat as the job is stored, and
    whether this repeats an accepted request (its ``Idempotency-Key``): a repeat is
    not held to the quotas or the budget again, so it still returns its job.
    """
    limits = await state.limits.for_tenant(caller.tenant_id)
    _refuse(state, await state.limits.rates.hit("create", caller.id, limits.create_rate))
    if idem is not None:
        earlier = await run_in_threadpool(state.jobs.find_idempotent, caller.tenant_id, idem)
        if earlier is not None:
            return limits, None, True
    if not (limits.max_active_jobs or limits.gpu_seconds_per_day):
        return limits, None, False
    fallback = state.limits.cfg.active_retry_after_s

    def admit(usage: TenantUsage) -> None:
        _refuse(state, check_quota(limits, usage, fallback))

    ledger = UsageLedger(state.jobs.engine)
    admit(await run_in_threadpool(ledger.holding, caller.tenant_id, state.clock()))
    return limits, admit, False


@router.post("", response_model=VideoObject, responses=errors(409, 413, 415))
async def create_video(
    request: Request,
    caller: Caller,
    state: State,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    cancel_after: Annotated[str | None, Header(min_length=1, max_length=100)] = None,
) -> JSONResponse:
    # The job's trace starts here (or joins the caller's, given a traceparent header).
    with submit_span("submit", request.headers.get("traceparent")) as span:
        limits, admit, repeat = await _admission(state, caller, idempotency_key)
        body, reference = await _parse_create(request, state)
        new = _new_job(state, caller.tenant_id, body, idempotency_key)
        if not repeat:
            p = new.params
            budget = check_budget(limits, p["width"], p["height"], p["num_frames"], p["steps"])
            _refuse(state, budget)
        new.deadline_at = _deadline(state, cancel_after)
        if body.webhook_url is not None:
            await check_webhook_url(state, body.webhook_url, "webhook_url")
        await _attach_image(state, new, reference)
        new.traceparent = span.traceparent
        try:
            job, created = await run_in_threadpool(state.jobs.create_job, new, admit)
        except ReusedIdempotencyKey as exc:
            raise ApiError(409, "idempotency_key_reused", str(exc), "Idempotency-Key") from None
        span.set("cinecloud.job_id", job.id)
        span.set("cinecloud.model", job.model)
        if created and body.webhook_url is not None:
            await add_request_webhook(state, caller.tenant_id, job.id, body.webhook_url)
    if created:
        state.metrics.submitted.labels(model=job.model).inc()
        state.notifier.notify()
        state.events.notify()
    return JSONResponse(await _view(state, job))


@router.get("", response_model=VideoList, responses=errors(404))
async def list_videos(
    caller: Caller,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> JSONResponse:
    try:
        jobs, more = await run_in_threadpool(
            lambda: state.jobs.list_jobs(caller.tenant_id, after=after, limit=limit, order=order)
        )
    except NotFound:
        raise video_not_found(after or "", "after") from None
    data = [video_object(state, j, None) for j in jobs]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


@router.get("/{video_id}", response_model=VideoObject, responses=errors(404))
async def retrieve_video(video_id: str, caller: Caller, state: State) -> JSONResponse:
    return JSONResponse(await _view(state, await _get(state, video_id, caller.tenant_id)))


async def _remove_files(state: AppState, job: JobRecord) -> None:
    await run_in_threadpool(state.store.delete_prefix, f"t/{job.tenant_id}/v/{job.id}/")


@router.delete("/{video_id}", response_model=DeletedVideo, responses=errors(404))
async def delete_video(video_id: str, caller: Caller, state: State) -> JSONResponse:
    before = await _get(state, video_id, caller.tenant_id)
    try:
        job = await run_in_threadpool(state.jobs.delete_job, video_id, caller.tenant_id)
    except NotFound:
        raise video_not_found(video_id) from None
    await _remove_files(state, job)
    state.events.notify()
    if job.status == "canceled" and before.status not in TERMINAL:  # canceled by this delete
        state.metrics.canceled.labels(model=job.model).inc()
    return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})


@router.post("/{video_id}/cancel", response_model=VideoObject, responses=errors(404, 409))
async def cancel_video(video_id: str, caller: Caller, state: State) -> JSONResponse:
    try:
        job = await run_in_threadpool(state.jobs.cancel, video_id, caller.tenant_id)
    except NotFound:
        raise video_not_found(video_id) from None
    except InvalidTransition as exc:
        raise ApiError(409, "invalid_state", f"video is already {exc.status.value}") from None
    await _remove_files(state, job)
    state.events.notify()
    state.metrics.canceled.labels(model=job.model).inc()
    return JSONResponse(video_object(state, job, None))


@router.get(
    "/{video_id}/content",
    status_code=307,
    response_class=RedirectResponse,
    responses={307: _REDIRECT, **errors(404, 409, 410)},
)
async def video_content(
    video_id: str,
    caller: Caller,
    state: State,
    variant: Literal["video", "thumbnail", "poster", "spritesheet", "preview", "hls"] = "video",
) -> RedirectResponse:
    job = await _get(state, video_id, caller.tenant_id)
    if job.status != "completed":
        raise ApiError(409, "video_not_ready", f"video is {job.status}, not completed")
    if job.expires_at is not None and state.clock() >= job.expires_at:
        raise ApiError(410, "video_expired", "this video's files have expired")
    name = ARTIFACT_FOR_VARIANT[variant]
    key = next((a.key for a in job.artifacts if a.name == name), None)
    if key is None:
        raise ApiError(404, "variant_not_available", f"this video has no {variant}", "variant")
    return RedirectResponse(artifact_url(state, key), status_code=307)
