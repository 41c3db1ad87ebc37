"""Signed URLs and tenant isolation through a real server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import av
import httpx

from cinecloud.delivery import sign
from cinecloud.testing.service import Service


def _done(c: httpx.Client) -> dict[str, object]:
    v = c.post("/v1/videos", json={"prompt": "a yellow square", "steps": 2}).json()
    deadline = time.monotonic() + 60
    while v["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
        v = c.get(f"/v1/videos/{v['id']}").json()
    assert v["status"] == "completed", v
    return v


def test_signed_urls(start_service: Callable[..., Service]) -> None:
    svc = start_service(workers=1)
    with svc.client() as c:
        outputs: dict[str, str] = _done(c)["outputs"]  # type: ignore[assignment]
    url = outputs["video"]
    assert set(outputs) == {"video", "thumbnail", "poster", "spritesheet", "preview", "hls"}
    assert httpx.get(outputs["spritesheet"]).content[:2] == b"\xff\xd8"
    preview = httpx.get(outputs["preview"])
    assert preview.headers["content-type"] == "image/webp" and preview.content[8:12] == b"WEBP"
    with av.open(outputs["hls"]) as container:  # the ladder, played through signed URLs
        assert sum(1 for _ in container.decode(video=0)) >= 1
    full = httpx.get(url)
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    body = full.content
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == body[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(body)}"
    assert httpx.get(url, headers={"Range": f"bytes={len(body) + 10}-"}).status_code == 416
    etag = full.headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304

    parts = urlsplit(url)
    sig = parse_qs(parts.query)["s"][0]
    tampered = url.replace(f"s={sig}", f"s={sig[:-2]}xx")
    assert httpx.get(tampered).status_code == 403
    secret = (svc.home / "secret").read_text().strip()
    past = int(time.time()) - 10
    expired = f"{svc.url}{parts.path}?e={past}&s={sign(parts.path, past, secret)}"
    resp = httpx.get(expired)
    assert resp.status_code == 410 and resp.json()["error"]["code"] == "url_expired"


def test_tenant_isolation_with_cli_keys(start_service: Callable[..., Service]) -> None:
    svc = start_service(workers=1)
    other = subprocess.run(
        [sys.executable, "-m", "cinecloud.cli", "keys", "create", "--tenant", "beta"],
        env=svc.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with svc.client() as a, svc.client(other) as b:
        v = _done(a)
        for path in ("", "/events", "/content"):
            resp = b.get(f"/v1/videos/{v['id']}{path}")
            assert resp.status_code == 404, path
            assert resp.json()["error"]["code"] == "video_not_found"
        assert b.delete(f"/v1/videos/{v['id']}").status_code == 404
        assert b.get("/v1/videos").json()["data"] == []
        assert a.get(f"/v1/videos/{v['id']}").status_code == 200
