"""Bearer API keys for the public API and the worker token for the internal one."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from cinecloud.api.errors import ApiError
from cinecloud.api.state import AppState, get_state
from cinecloud.jobs import ApiKeyRecord

__all__ = ["Admin", "Caller", "WorkerAuth", "require_admin", "require_key", "require_worker"]


# The two bearer schemes, as the OpenAPI document names them; a missing or malformed
# header is answered by this module (401 and the OpenAI error body), not by FastAPI.
api_key_scheme = HTTPBearer(
    scheme_name="apiKey", description="An API key: 'Authorization: Bearer <key>'", auto_error=False
)
worker_scheme = HTTPBearer(
    scheme_name="workerToken",
    description="The workers' shared token (worker.token): the worker protocol",
    auto_error=False,
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(api_key_scheme)]
WorkerBearer = Annotated[HTTPAuthorizationCredentials | None, Depends(worker_scheme)]


def _bearer(credentials: HTTPAuthorizationCredentials | None) -> str:
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise ApiError(
            401,
            "missing_api_key",
            "send your API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def require_key(
    credentials: Bearer, state: Annotated[AppState, Depends(get_state)]
) -> ApiKeyRecord:
    """The caller's key; then its request counts against the key's rate limit."""
    key = await _authenticate(_bearer(credentials), state)
    limits = await state.limits.for_tenant(key.tenant_id)
    refusal = await state.limits.rates.hit("requests", key.id, limits.rate)
    if refusal is not None:
        state.metrics.limited.labels(code=refusal.code).inc()
        raise refusal.error()
    return key


async def _authenticate(token: str, state: AppState) -> ApiKeyRecord:
    key = state.key_cache.get(token, state.clock())
    if key is None:
        key = await run_in_threadpool(state.accounts.authenticate, token)
        if key is not None:
            state.key_cache.put(token, key, state.clock())
    if key is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "the API key is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


async def require_worker(
    credentials: WorkerBearer, state: Annotated[AppState, Depends(get_state)]
) -> None:
    token = _bearer(credentials)
    if not hmac.compare_digest(token.encode(), state.cfg.worker.token.encode()):
        raise ApiError(
            401,
            "invalid_worker_token",
            "the worker token is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )


Caller = Annotated[ApiKeyRecord, Depends(require_key)]
WorkerAuth = Depends(require_worker)


async def require_admin(caller: Caller) -> ApiKeyRecord:
    """The caller's key, which must be an admin key (operators' endpoints)."""
    if not caller.is_admin:
        raise ApiError(403, "admin_required", "this endpoint needs an admin API key")
    return caller


Admin = Annotated[ApiKeyRecord, Depends(require_admin)]
