"""``/v1/admin/...``: operator views, for admin API keys only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from cinecloud.api.auth import Caller
from cinecloud.api.errors import ApiError
from cinecloud.api.openapi import errors
from cinecloud.api.state import AppState, get_state
from cinecloud.scheduler.autoscaler import decision_view

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])
State = Annotated[AppState, Depends(get_state)]


@router.get("/autoscaler", responses=errors(403))
async def autoscaler(
    caller: Caller, state: State, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """The autoscaler's settings, each pool's latest decision and the recent decisions
    that changed a count or a reason, newest first."""
    if not caller.is_admin:
        raise ApiError(403, "admin_required", "this endpoint needs an admin API key")
    scaler = state.autoscaler
    if scaler is None:
        return {"object": "autoscaler", "enabled": False, "pools": [], "decisions": []}
    cfg = state.cfg.autoscale
    latest = [decision_view(d) for d in scaler.current()]
    return {
        "object": "autoscaler",
        "enabled": True,
        "launcher": scaler.launcher_name,
        "interval_s": cfg.interval_s,
        "policy": {
            "min_workers": cfg.min_workers,
            "max_workers": cfg.max_workers,
            "target_wait_s": cfg.target_wait_s,
            "wait_quantile": cfg.wait_quantile,
            "cold_start_s": cfg.cold_start_s,
            "idle_to_zero_s": cfg.idle_to_zero_s,
            "upscale_delay_s": cfg.upscale_delay_s,
            "downscale_delay_s": cfg.downscale_delay_s,
            "on_demand_base": cfg.on_demand_base,
            "on_demand_share": cfg.on_demand_share,
        },
        "pools": latest,
        "decisions": [decision_view(d) for d in scaler.recent()[:limit]],
    }
