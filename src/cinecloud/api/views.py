"""Job records to wire objects."""

from __future__ import annotations

from typing import Any

from cinecloud.api.state import AppState
from cinecloud.delivery import signed_url
from cinecloud.engine.registry import UnknownModel
from cinecloud.jobs import JobRecord
from cinecloud.scheduler import job_shape
from cinecloud.storage import S3Store

__all__ = ["ARTIFACT_FOR_VARIANT", "artifact_url", "queued_estimate", "video_object"]

# The OpenAI SDK's variant names (plus ``poster``, the animated ``preview`` and the HLS
# master playlist) and the files that carry them.
ARTIFACT_FOR_VARIANT = {
    "video": "video.mp4",
    "thumbnail": "thumbnail.jpg",
    "poster": "poster.jpg",
    "spritesheet": "spritesheet.jpg",
    "preview": "preview.webp",
    "hls": "hls/master.m3u8",
}


def artifact_url(state: AppState, key: str) -> str:
    """A signed /cdn URL (origin or edge), or with ``delivery.serve_from = "bucket"`` a
    presigned GET straight from the S3 bucket."""
    d = state.cfg.delivery
    if d.serve_from == "bucket" and isinstance(state.store, S3Store):
        return state.store.presigned_get(key, d.url_ttl_s)
    return signed_url(d.base_url, key, secret=d.secret, expires=int(state.clock()) + d.url_ttl_s)


def _outputs(state: AppState, job: JobRecord) -> dict[str, str] | None:
    if job.status != "completed":
        return None
    by_name = {a.name: a.key for a in job.artifacts}
    return {
        variant: artifact_url(state, by_name[name])
        for variant, name in ARTIFACT_FOR_VARIANT.items()
        if name in by_name
    }


def queued_estimate(state: AppState, job: JobRecord) -> float | None:
    """A queued job's estimated run time (the service-time model, on the ranks it asked
    for or on one); None for other jobs, whose worker reports ``eta_s`` itself."""
    if job.status != "queued":
        return None
    try:
        family = state.registry.get(job.model).family
    except UnknownModel:
        return None
    seconds = state.service.service_s(family, job_shape(job), job.parallel or 1)
    return round(seconds, 3)


def video_object(state: AppState, job: JobRecord, queue_position: int | None) -> dict[str, Any]:
    p = job.params
    error = (
        {"code": job.error_code, "message": job.error_message or ""}
        if job.status == "failed" and job.error_code
        else None
    )
    return {
        "id": job.id,
        "object": "video",
        "status": job.status,
        "progress": job.progress,
        "created_at": int(job.created_at),
        "completed_at": int(job.completed_at) if job.completed_at else None,
        "expires_at": int(job.expires_at) if job.expires_at else None,
        "model": job.model,
        "prompt": job.prompt,
        "seconds": job.seconds,
        "size": job.size,
        "error": error,
        "remixed_from_video_id": None,
        "stage": job.stage,
        "step": job.step,
        "total_steps": job.total_steps,
        "eta_s": job.eta_s if job.eta_s is not None else queued_estimate(state, job),
        "queue_position": queue_position,
        "timings": job.timings,
        # where and how it ran: device, dtype and the memory plan (offload, VAE tiling)
        "engine": job.engine,
        # the quality gate's readings: frames, black and frozen counts, flicker, warp error
        "qc": job.qc,
        "outputs": _outputs(state, job),
        "usage": {
            "gpu_seconds": (job.gpu_seconds or 0.0) * (job.gpu_count or 1),
            "dollars": job.cost_usd or 0.0,
        },
        "gpu_type": job.gpu_type,
        "deadline_at": int(job.deadline_at) if job.deadline_at is not None else None,
        "seed": job.seed,
        "num_frames": p["num_frames"],
        "fps": p["fps"],
        "steps": p["steps"],
        "guidance_scale": p["guidance_scale"],
        "negative_prompt": p["negative_prompt"],
        "step_cache": p.get("step_cache", "off"),
        "priority": job.priority,
        "parallel": job.parallel,
        "attempts": job.attempts,
        "metadata": job.metadata,
    }
