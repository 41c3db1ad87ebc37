"""Request bodies read under a byte limit: past it, 413 ``body_too_large``."""

from __future__ import annotations

from fastapi import Request
from starlette.types import Message

from cinecloud.api.errors import ApiError

__all__ = ["capped", "read_limited"]


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def capped(request: Request, limit: int) -> Request:
    """The request, its body cut off with 413 past ``limit`` bytes as the form parser
    reads it (a chunked upload declares no length up front)."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise ApiError(413, "body_too_large", f"request body is over {limit} bytes")
        return message

    return Request(request.scope, receive)
