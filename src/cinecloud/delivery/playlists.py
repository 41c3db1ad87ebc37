"""Signed HLS playlists: every URI inside a playlist signed like the playlist itself.

A player resolves the URIs in a playlist against the playlist's URL, and a relative
URI carries no query string, so ``480p/index.m3u8`` under a signed master would reach
the edge unsigned (403). The origin therefore sends playlists with each URI (segment
lines and ``URI="..."`` attributes such as ``EXT-X-MAP``) signed for the same expiry
as the request that fetched the playlist. Such a playlist differs per expiry, so it is
sent ``Cache-Control: private, no-store``: the edge, whose cache key leaves the
signature out, never caches one. The segments they point to are cached as usual.
"""

from __future__ import annotations

import posixpath
import re

from cinecloud.delivery.signing import sign

__all__ = ["PLAYLIST_CACHE_CONTROL", "PLAYLIST_TYPES", "sign_playlist"]

PLAYLIST_TYPES = frozenset({"application/vnd.apple.mpegurl", "application/x-mpegurl"})
PLAYLIST_CACHE_CONTROL = "private, no-store"
_URI_ATTR = re.compile(r'URI="([^"]*)"')
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _signed(ref: str, base_dir: str, prefix: str, expires: int, secret: str) -> str:
    """``ref`` with ``?e=&s=`` for the path it resolves to; left alone when it leaves
    ``prefix``, is absolute with a scheme, or already has a query."""
    if not ref or _SCHEME.match(ref) or "?" in ref or "#" in ref:
        return ref
    path = posixpath.normpath(ref if ref.startswith("/") else posixpath.join(base_dir, ref))
    if not path.startswith(prefix + "/"):
        return ref
    return f"{ref}?e={expires}&s={sign(path, expires, secret)}"


def sign_playlist(text: str, uri: str, *, expires: int, secret: str, prefix: str = "/cdn") -> str:
    """``text`` (a playlist served at ``uri``) with its URIs signed until ``expires``."""
    base_dir = posixpath.dirname(uri)
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            out.append(line)
        elif stripped.startswith("#"):
            out.append(
                _URI_ATTR.sub(
                    lambda m: f'URI="{_signed(m.group(1), base_dir, prefix, expires, secret)}"',
                    line,
                )
            )
        else:
            out.append(_signed(stripped, base_dir, prefix, expires, secret))
    return "\n".join(out) + "\n"
