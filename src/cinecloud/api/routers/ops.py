"""``/v1/admin/overview``: the operators' view of the service, for admin API keys only (403
``admin_required`` for other keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cinecloud.api.auth import Admin
from cinecloud.api.openapi import errors
from cinecloud.api.overview import build_overview
from cinecloud.api.state import AppState, get_state

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])
State = Annotated[AppState, Depends(get_state)]


@router.get("/overview", responses=errors(403))
async def overview(
    _: Admin,
    state: State,
    window_s: Annotated[float, Query(ge=1, le=7 * 24 * 3600)] = 3600.0,
    buckets: Annotated[int, Query(ge=1, le=240)] = 30,
) -> JSONResponse:
    """The queue by model and priority, the workers and their jobs, stage-latency
    percentiles and throughput over the last ``window_s`` in ``buckets`` steps, and the
    GPU-seconds per video by model."""
    body = await run_in_threadpool(
        lambda: build_overview(state, window_s=window_s, buckets=buckets)
    )
    return JSONResponse(body)
