"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from cinecloud.api.state import AppState, get_state

__all__ = ["router"]

router = APIRouter(tags=["health"])
State = Annotated[AppState, Depends(get_state)]
_NOT_READY = {
    "description": "A dependency (database, storage) does not answer",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["status", "checks"],
                "properties": {
                    "status": {"type": "string"},
                    "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        }
    },
}
_METRICS = {
    "description": "Prometheus text exposition",
    "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
}


@router.get("/healthz")
async def healthz(state: State) -> dict[str, Any]:
    """Alive; and which replica this is and whether it leads (runs the loops)."""
    lead = state.leadership
    return {"status": "ok", "replica": lead.replica, "leader": lead.leading}


def _check(state: AppState) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with state.jobs.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        state.store.stat("readyz/probe")
        checks["storage"] = "ok"
    except Exception as exc:  # any backend error means not ready
        checks["storage"] = f"error: {type(exc).__name__}"
    return checks


@router.get("/readyz", responses={503: _NOT_READY})
async def readyz(state: State) -> JSONResponse:
    checks = await run_in_threadpool(_check, state)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", response_class=Response, responses={200: _METRICS})
async def metrics(state: State) -> Response:
    body = await run_in_threadpool(state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
