"""``GET /v1/limits``: the caller's rate limits, quotas and request limits, and its use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from cinecloud.api.auth import Caller
from cinecloud.api.state import AppState, get_state
from cinecloud.jobs.usage import UsageLedger

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["limits"])
State = Annotated[AppState, Depends(get_state)]


@router.get("/limits")
async def limits(caller: Caller, state: State) -> dict[str, Any]:
    """What this key and its tenant may do (0 or "" is no limit), and what the tenant
    holds now: its queued and running jobs and the GPU-seconds billed today (UTC)."""
    own = await state.limits.for_tenant(caller.tenant_id)
    ledger = UsageLedger(state.jobs.engine)
    usage = await run_in_threadpool(ledger.holding, caller.tenant_id, state.clock())
    api = state.cfg.api
    return {
        "object": "limits",
        "tenant_id": caller.tenant_id,
        "rate": own.rate,
        "create_rate": own.create_rate,
        "max_active_jobs": own.max_active_jobs,
        "active_jobs": usage.active_jobs,
        "gpu_seconds_per_day": own.gpu_seconds_per_day,
        "gpu_seconds_today": round(usage.gpu_seconds, 6),
        "day": usage.day,
        "max_pixel_steps": own.max_pixel_steps,
        "max_prompt_chars": api.max_prompt_chars,
        "max_body_bytes": api.max_body_bytes,
        "max_image_bytes": api.max_image_bytes,
        "max_image_pixels": api.max_image_pixels,
    }
