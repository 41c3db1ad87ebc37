"""The origin: serves stored blobs at signed ``/cdn/{key}`` URLs.

Blobs are immutable under their key, so responses carry a strong ETag (the
sha256), ``Cache-Control: public, max-age=31536000, immutable`` and byte-range
support: what an nginx edge or CDN needs to cache them and what players need to
seek. Order of checks: signature (403, 410), then the blob (404), then
``If-None-Match`` (304), then ``Range`` (206, 416).

Ranges: one range (``bytes=a-b``, ``a-``, ``-n``) is answered with 206. A
request for several ranges, a unit other than bytes, or an ``If-Range`` that
does not match the ETag gets the whole blob (200), which HTTP allows. A bytes
range that is malformed or starts past the end gets 416 with
``Content-Range: bytes */{size}``.

HLS playlists are the exception: they are sent whole, with every URI in them signed
for the request's expiry (:mod:`cinecloud.delivery.playlists`) and not cacheable.

Blobs on the local disk are sent with starlette's ``FileResponse`` (it streams
in chunks, serves the single range itself and can hand the path to the server);
other stores are streamed from ``store.open`` in chunks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from cinecloud.delivery.playlists import PLAYLIST_CACHE_CONTROL, PLAYLIST_TYPES, sign_playlist
from cinecloud.delivery.signing import SignatureExpired, SignatureInvalid, verify
from cinecloud.storage import BlobInfo, BlobNotFound, BlobStore, InvalidKey, S3Store

__all__ = [
    "CACHE_CONTROL",
    "RangeNotSatisfiable",
    "create_origin_router",
    "etag_matches",
    "parse_range",
]

CACHE_CONTROL = "public, max-age=31536000, immutable"
_CHUNK = 64 * 1024
_SPEC = re.compile(r"([0-9]*)\s*-\s*([0-9]*)", re.ASCII)


class RangeNotSatisfiable(Exception):
    """The Range header asks for bytes the blob does not have, or is malformed."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte range to send, or None for the whole blob.

    Raises RangeNotSatisfiable for a malformed bytes range or one outside ``size``.
    """
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None  # other units must be ignored
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) > 1:
        return None  # several ranges: send the whole blob
    match = _SPEC.fullmatch(parts[0]) if parts else None
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"malformed range: {header!r}")
    first_s, last_s = match.groups()
    if not first_s:  # suffix: the last n bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"empty suffix range: {header!r}")
        return max(size - n, 0), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first > last and last_s:
        raise RangeNotSatisfiable(f"range ends before it starts: {header!r}")
    if first >= size:
        raise RangeNotSatisfiable(f"range starts past the end ({size} bytes)")
    return first, min(last, size - 1)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value matches ``etag`` (weak comparison, as HTTP asks)."""
    if if_none_match.strip() == "*":
        return True
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag.removeprefix("W/") == etag:
            return True
    return False


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {"code": code, "message": message, "param": None, "type": "invalid_request_error"}
    }
    return JSONResponse(
        body, status_code=status, headers={"cache-control": "no-store", **(headers or {})}
    )


def _read(fh: BinaryIO, first: int, length: int) -> Iterator[bytes]:
    try:
        if first:
            if fh.seekable():
                fh.seek(first)
            else:
                _skip(fh, first)
        while length > 0:
            chunk = fh.read(min(_CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
    finally:
        fh.close()


def _skip(fh: BinaryIO, count: int) -> None:
    while count > 0:
        chunk = fh.read(min(_CHUNK, count))
        if not chunk:
            return
        count -= len(chunk)


def _stream(
    store: BlobStore,
    info: BlobInfo,
    rng: tuple[int, int] | None,
    headers: dict[str, str],
    head: bool,
) -> Response:
    try:
        if rng is not None and isinstance(store, S3Store):
            # Fetch only the range from the bucket rather than reading up to it.
            fh, rng_read = store.open_range(info.key, rng), True
        else:
            fh, rng_read = store.open(info.key), False
    except BlobNotFound:
        return _error(404, "not_found", f"no blob at {info.key}")
    first, last = rng if rng is not None else (0, info.size - 1)
    headers["content-length"] = str(last - first + 1)
    if rng is not None:
        headers["content-range"] = f"bytes {first}-{last}/{info.size}"
    status = 200 if rng is None else 206
    if head:
        fh.close()
        return Response(status_code=status, headers=headers)
    body = _read(fh, 0 if rng_read else first, last - first + 1)
    return StreamingResponse(body, status, headers=headers)


def _playlist(
    store: BlobStore, info: BlobInfo, uri: str, expires: int, secret: str, method: str
) -> Response:
    """A playlist with its URIs signed until ``expires``; whole (ranges are ignored)."""
    try:
        text = store.get_bytes(info.key).decode("utf-8")
    except BlobNotFound:
        return _error(404, "not_found", f"no blob at {info.key}")
    prefix = uri[: -len(info.key) - 1]
    body = sign_playlist(text, uri, expires=expires, secret=secret, prefix=prefix).encode()
    headers = {"cache-control": PLAYLIST_CACHE_CONTROL, "content-type": info.content_type}
    if method == "HEAD":
        headers["content-length"] = str(len(body))
        return Response(status_code=200, headers=headers)
    return Response(body, status_code=200, headers=headers)


def _serve(
    store: BlobStore, request: Request, key: str, uri: str, secret: str, now: float
) -> Response:
    query = request.query_params
    try:
        verify(uri, query.get("e"), query.get("s"), secret=secret, now=now)
    except SignatureInvalid as exc:
        return _error(403, SignatureInvalid.code, str(exc))
    except SignatureExpired as exc:
        return _error(410, SignatureExpired.code, str(exc))
    try:
        info = store.stat(key)
    except InvalidKey:
        info = None
    if info is None:
        return _error(404, "not_found", f"no blob at {key}")
    if info.content_type in PLAYLIST_TYPES:
        return _playlist(store, info, uri, int(str(query.get("e"))), secret, request.method)
    etag = f'"{info.sha256}"'
    headers = {"etag": etag, "cache-control": CACHE_CONTROL, "accept-ranges": "bytes"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    try:
        rng = None if if_range not in (None, etag) else parse_range(range_header, info.size)
    except RangeNotSatisfiable as exc:
        content_range = {"content-range": f"bytes */{info.size}"}
        return _error(416, "range_not_satisfiable", str(exc), content_range)
    headers["content-type"] = info.content_type
    path = store.local_path(key)
    # FileResponse reads the Range header itself: use it only where it will agree with rng.
    if path is not None and (range_header is None or rng is not None):
        try:
            return FileResponse(path, headers=headers, stat_result=os.stat(path))
        except FileNotFoundError:
            return _error(404, "not_found", f"no blob at {key}")
    return _stream(store, info, rng, headers, head=request.method == "HEAD")


def create_origin_router(
    store: BlobStore,
    *,
    secret: str,
    clock: Callable[[], float],
    prefix: str = "/cdn",
) -> APIRouter:
    """A router serving ``GET`` and ``HEAD`` ``{prefix}/{key}`` from ``store``."""
    if not secret:
        raise ValueError("secret is empty")
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start with '/' and not end with one: {prefix!r}")
    router = APIRouter()

    @router.api_route(f"{prefix}/{{key:path}}", methods=["GET", "HEAD"], include_in_schema=False)
    def serve_blob(key: str, request: Request) -> Response:
        return _serve(store, request, key, f"{prefix}/{key}", secret, clock())

    return router
