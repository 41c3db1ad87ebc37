"""``GET /v1/usage``: jobs, GPU-seconds and dollars per tenant and UTC day (docs/cost.md)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from cinecloud.api.auth import Caller
from cinecloud.api.errors import ApiError
from cinecloud.api.openapi import errors
from cinecloud.api.state import AppState, get_state
from cinecloud.jobs import ApiKeyRecord
from cinecloud.jobs.usage import UsageLedger, UsageRow

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["usage"])
State = Annotated[AppState, Depends(get_state)]

DEFAULT_DAYS = 30  # without ``start``: this many days up to ``end``
MAX_DAYS = 366  # the longest range one call may ask for
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(value: str | None, param: str) -> date | None:
    if value is None:
        return None
    try:
        if not _DAY.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(
            400, "invalid_date", f"{param} must be a date as YYYY-MM-DD (got {value!r})", param
        ) from None


def _range(state: AppState, start: str | None, end: str | None) -> tuple[date, date]:
    last = _day(end, "end") or datetime.fromtimestamp(state.clock(), UTC).date()
    first = _day(start, "start") or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise ApiError(400, "invalid_date_range", f"start ({first}) is after end ({last})", "start")
    if (last - first).days + 1 > MAX_DAYS:
        raise ApiError(
            400,
            "invalid_date_range",
            f"a range covers at most {MAX_DAYS} days (got {(last - first).days + 1})",
            "start",
        )
    return first, last


def _tenant(state: AppState, caller: ApiKeyRecord, tenant: str | None) -> str | None:
    """The tenant id to report (None: every tenant, for an admin key that names none)."""
    if tenant is None:
        return None if caller.is_admin else caller.tenant_id
    found = UsageLedger(state.jobs.engine).tenants([tenant])
    if caller.tenant_id in found:
        return caller.tenant_id
    if not caller.is_admin:
        raise ApiError(
            403, "permission_denied", "this key may only read its own tenant's usage", "tenant"
        )
    if not found:
        raise ApiError(404, "tenant_not_found", f"no tenant with id or name '{tenant}'", "tenant")
    return next(iter(found))


def _totals(rows: list[UsageRow]) -> dict[str, Any]:
    return {
        "jobs": sum(r.jobs for r in rows),
        "gpu_seconds": round(sum(r.gpu_seconds for r in rows), 6),
        "dollars": round(sum(r.dollars for r in rows), 6),
    }


def _by_day(rows: list[UsageRow]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[UsageRow]] = {}
    for r in rows:
        groups.setdefault((r.day, r.tenant_id), []).append(r)
    return [
        {
            "object": "usage.day",
            "tenant_id": tenant_id,
            "tenant": group[0].tenant,
            "day": day,
            **_totals(group),
            "by_gpu_type": {
                r.gpu_type: {
                    "jobs": r.jobs,
                    "gpu_seconds": round(r.gpu_seconds, 6),
                    "dollars": round(r.dollars, 6),
                }
                for r in group
            },
        }
        for (day, tenant_id), group in groups.items()
    ]


@router.get("/usage", responses=errors(403, 404))
async def usage(
    caller: Caller,
    state: State,
    start: Annotated[str | None, Query(max_length=32)] = None,
    end: Annotated[str | None, Query(max_length=32)] = None,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Billed usage per tenant and day, ``start`` to ``end`` (UTC dates, both included).

    A normal key reads its own tenant's; an admin key any tenant's (``tenant``: id or
    name), or every tenant's when it names none.
    """
    first, last = _range(state, start, end)
    tenant_id = await run_in_threadpool(_tenant, state, caller, tenant)
    ledger = UsageLedger(state.jobs.engine)
    rows = await run_in_threadpool(ledger.daily, first.isoformat(), last.isoformat(), tenant_id)
    return {
        "object": "list",
        "start": first.isoformat(),
        "end": last.isoformat(),
        "tenant_id": tenant_id,
        "data": _by_day(rows),
        "total": _totals(rows),
    }
