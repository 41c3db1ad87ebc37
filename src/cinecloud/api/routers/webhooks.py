"""Webhooks: ``/v1/webhooks`` (a tenant's endpoints), a job's delivery log and replay."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cinecloud.api.auth import Caller
from cinecloud.api.errors import ApiError, video_not_found
from cinecloud.api.openapi import errors
from cinecloud.api.schemas import Text
from cinecloud.api.state import AppState, get_state
from cinecloud.api.webhook_loop import check_webhook_url
from cinecloud.jobs import NotFound
from cinecloud.jobs.webhooks import DEFAULT_EVENTS, EVENT_TYPES, DeliveryRecord, EndpointRecord
from cinecloud.webhooks import new_secret

__all__ = ["add_request_webhook", "check_events", "router"]

router = APIRouter(prefix="/v1", tags=["webhooks"])
State = Annotated[AppState, Depends(get_state)]


class EndpointCreate(BaseModel):
    url: Text = Field(max_length=2048)
    events: list[str] | None = Field(None, max_length=len(EVENT_TYPES))
    description: Text = Field("", max_length=200)


class Replay(BaseModel):
    delivery_id: str | None = None


class WebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str]
    description: str
    created_at: int
    secret: str | None = Field(None, description="Only when the endpoint is made")


class WebhookEndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookEndpoint]


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool


class WebhookSecret(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    key: str


class DeliveryAttempt(BaseModel):
    attempt: int
    started_at: float
    duration_s: float
    address: str | None
    status_code: int | None
    error: str | None


class WebhookDelivery(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint_id: str
    url: str
    event_id: int
    type: str
    status: str
    attempts: int
    next_attempt_at: float | None
    created_at: float
    delivered_at: float | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[DeliveryAttempt]


class WebhookDeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookDelivery]


class WebhookReplay(BaseModel):
    object: Literal["webhook_replay"] = "webhook_replay"
    replayed: int


def check_events(events: list[str] | None) -> tuple[str, ...]:
    if events is None:
        return DEFAULT_EVENTS
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown or not events:
        raise ApiError(
            400,
            "invalid_webhook_event",
            f"events must be some of {', '.join(EVENT_TYPES)} (got {unknown or 'none'})",
            "events",
        )
    return tuple(e for e in EVENT_TYPES if e in events)


async def add_request_webhook(state: AppState, tenant_id: str, job_id: str, url: str) -> None:
    """The endpoint of a request's own ``webhook_url`` (checked before the job was made),
    signed with the tenant's request secret (``GET /v1/webhooks/default/secret``)."""

    def add() -> None:
        secret = state.webhooks.request_secret(tenant_id, new_secret)
        state.webhooks.create_endpoint(tenant_id, url, DEFAULT_EVENTS, secret, job_id=job_id)

    await run_in_threadpool(add)


def _endpoint(ep: EndpointRecord, *, secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ep.id,
        "object": "webhook_endpoint",
        "url": ep.url,
        "events": list(ep.events),
        "description": ep.description,
        "created_at": int(ep.created_at),
    }
    if secret:  # shown once, when the endpoint is made
        out["secret"] = ep.secret
    return out


def _delivery(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "object": "webhook_delivery",
        "endpoint_id": d.endpoint_id,
        "url": d.url,
        "event_id": d.event_id,
        "type": f"video.{d.event_type}",
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "attempt_log": [
            {
                "attempt": a.attempt,
                "started_at": a.started_at,
                "duration_s": round(a.duration_s, 6),
                "address": a.address,
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in d.attempt_log
        ],
    }


def _not_found(endpoint_id: str) -> ApiError:
    return ApiError(
        404, "webhook_not_found", f"no webhook endpoint with id '{endpoint_id}'", "webhook_id"
    )


@router.post("/webhooks", response_model=WebhookEndpoint, response_model_exclude_none=True)
async def create_endpoint(body: EndpointCreate, caller: Caller, state: State) -> dict[str, Any]:
    events = check_events(body.events)
    await check_webhook_url(state, body.url, "url")
    ep = await run_in_threadpool(
        lambda: state.webhooks.create_endpoint(
            caller.tenant_id, body.url, events, new_secret(), description=body.description
        )
    )
    return _endpoint(ep, secret=True)


@router.get("/webhooks", response_model=WebhookEndpointList, response_model_exclude_none=True)
async def list_endpoints(caller: Caller, state: State) -> dict[str, Any]:
    eps = await run_in_threadpool(state.webhooks.list_endpoints, caller.tenant_id)
    return {"object": "list", "data": [_endpoint(e) for e in eps]}


@router.get("/webhooks/default/secret", response_model=WebhookSecret)
async def request_secret(caller: Caller, state: State) -> dict[str, str]:
    """The secret that signs deliveries to a request's own ``webhook_url``."""
    key = await run_in_threadpool(state.webhooks.request_secret, caller.tenant_id, new_secret)
    return {"object": "webhook_secret", "key": key}


@router.get(
    "/webhooks/{webhook_id}",
    response_model=WebhookEndpoint,
    response_model_exclude_none=True,
    responses=errors(404),
)
async def get_endpoint(webhook_id: str, caller: Caller, state: State) -> dict[str, Any]:
    try:
        ep = await run_in_threadpool(state.webhooks.get_endpoint, caller.tenant_id, webhook_id)
    except NotFound:
        raise _not_found(webhook_id) from None
    return _endpoint(ep)


@router.delete(
    "/webhooks/{webhook_id}", response_model=WebhookEndpointDeleted, responses=errors(404)
)
async def delete_endpoint(webhook_id: str, caller: Caller, state: State) -> dict[str, Any]:
    try:
        await run_in_threadpool(state.webhooks.disable_endpoint, caller.tenant_id, webhook_id)
    except NotFound:
        raise _not_found(webhook_id) from None
    return {"id": webhook_id, "object": "webhook_endpoint.deleted", "deleted": True}


async def _job_deliveries(state: AppState, video_id: str, tenant_id: str) -> list[DeliveryRecord]:
    try:
        await run_in_threadpool(state.jobs.get_job, video_id, tenant_id)
    except NotFound:
        raise video_not_found(video_id) from None
    return await run_in_threadpool(state.webhooks.deliveries, video_id)


@router.get(
    "/videos/{video_id}/webhooks", response_model=WebhookDeliveryList, responses=errors(404)
)
async def job_deliveries(video_id: str, caller: Caller, state: State) -> dict[str, Any]:
    found = await _job_deliveries(state, video_id, caller.tenant_id)
    return {"object": "list", "data": [_delivery(d) for d in found]}


@router.post(
    "/videos/{video_id}/webhooks/replay", response_model=WebhookReplay, responses=errors(404, 409)
)
async def replay(video_id: str, body: Replay, caller: Caller, state: State) -> dict[str, Any]:
    """Send one delivery again (``delivery_id``), or every failed one of the job."""
    found = await _job_deliveries(state, video_id, caller.tenant_id)
    if body.delivery_id is not None:
        match = next((d for d in found if d.id == body.delivery_id), None)
        if match is None:
            raise ApiError(
                404,
                "webhook_delivery_not_found",
                f"video {video_id} has no webhook delivery '{body.delivery_id}'",
                "delivery_id",
            )
        if match.status not in ("delivered", "failed"):
            raise ApiError(
                409, "webhook_delivery_pending", f"delivery is {match.status}; it is not done yet"
            )
    count = await run_in_threadpool(
        state.webhooks.replay, video_id, body.delivery_id, state.cfg.webhooks.max_attempts
    )
    if count:
        state.events.notify()
    return {"object": "webhook_replay", "replayed": count}
