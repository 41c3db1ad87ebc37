"""``GET /v1/videos/{id}/events``: Server-Sent Events read from ``job_events``.

Every event carries its row id, so a client that reconnects with
``Last-Event-ID`` resumes exactly where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cinecloud.api.auth import Caller
from cinecloud.api.errors import ApiError, video_not_found
from cinecloud.api.openapi import errors
from cinecloud.api.state import AppState, get_state
from cinecloud.jobs import NotFound

__all__ = ["router"]

router = APIRouter(prefix="/v1/videos", tags=["videos"])

_FINAL = frozenset({"completed", "failed", "canceled", "deleted"})
POLL_S = 0.2
KEEPALIVE_S = 15.0
#: The largest event id (``job_events.id`` is a 32-bit integer on PostgreSQL): a cursor
#: past it is refused with 400 rather than sent to the database.
MAX_EVENT_ID = 2**31 - 1
_STREAM = {
    "description": "Server-Sent Events: the job's events, then the stream ends at its last",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One event: its row id, its type, and a JSON object as data",
                "required": ["id", "event", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"type": "string"},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
            }
        }
    },
}


async def _stream(state: AppState, job_id: str, after: int) -> AsyncIterator[bytes]:
    idle = 0.0
    while True:
        events = await run_in_threadpool(state.jobs.events_after, job_id, after)
        for ev in events:
            after = ev.id
            payload = json.dumps({"type": ev.type, "created_at": ev.created_at, **ev.data})
            yield f"id: {ev.id}\nevent: {ev.type}\ndata: {payload}\n\n".encode()
            if ev.type in _FINAL:
                return
        if events:
            idle = 0.0
            continue
        await state.events.wait(POLL_S)
        idle += POLL_S
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield b": keep-alive\n\n"


@router.get(
    "/{video_id}/events",
    response_class=StreamingResponse,
    responses={200: _STREAM, **errors(404)},
)
async def video_events(
    video_id: str,
    caller: Caller,
    state: Annotated[AppState, Depends(get_state)],
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None,
) -> StreamingResponse:
    try:
        await run_in_threadpool(state.jobs.get_job, video_id, caller.tenant_id)
    except NotFound:
        raise video_not_found(video_id) from None
    start = after or 0
    if last_event_id:
        if not (last_event_id.isascii() and last_event_id.isdigit()) or (
            int(last_event_id) > MAX_EVENT_ID
        ):
            raise ApiError(
                400, "invalid_value", "Last-Event-ID must be an event id", "Last-Event-ID"
            )
        start = int(last_event_id)
    return StreamingResponse(
        _stream(state, video_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
