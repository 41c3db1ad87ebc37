"""Pre-warming the edge: fetch a finished job's files through it once, so the first
viewer's requests are cache hits.

:func:`prewarm_plan` is the policy (pure): which artifacts, in which order. Small
files a page shows first (thumbnail, poster, preview, spritesheet), then each HLS
rendition's init segment and first media segment (where playback starts), then the
MP4. Playlists are left out: the origin sends them uncached, signed per request.
:func:`warm` is the actuator: GET each URL, read and drop the body, and report what
the edge said (``X-Cache-Status``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx

__all__ = ["PREWARM_FIRST", "WarmResult", "prewarm_plan", "warm"]

#: Artifacts warmed first, in this order, when a job has them.
PREWARM_FIRST = ("thumbnail.jpg", "poster.jpg", "preview.webp", "spritesheet.jpg")
_FIRST_SEGMENT = re.compile(r"hls/[^/]+/(init\.mp4|seg_00000\.m4s)")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class WarmResult:
    url: str
    status: int
    cache: str  # X-Cache-Status as the edge sent it ("" when it sent none)
    size: int


def prewarm_plan(names: Iterable[str], *, include_video: bool = True) -> list[str]:
    """The artifact names to warm, in order (see the module docstring)."""
    present = list(dict.fromkeys(names))
    plan = [n for n in PREWARM_FIRST if n in present]
    plan += sorted(n for n in present if _FIRST_SEGMENT.fullmatch(n))
    if include_video and "video.mp4" in present:
        plan.append("video.mp4")
    return plan


def warm(urls: Sequence[str], client: httpx.Client) -> list[WarmResult]:
    """GET each URL in turn (bodies read and dropped); failures are reported, not raised."""
    results = []
    for url in urls:
        size = 0
        try:
            with client.stream("GET", url) as response:
                for chunk in response.iter_raw(_CHUNK):
                    size += len(chunk)
                cache = response.headers.get("x-cache-status", "")
                results.append(WarmResult(url, response.status_code, cache, size))
        except httpx.HTTPError:
            results.append(WarmResult(url, 0, "", size))
    return results
