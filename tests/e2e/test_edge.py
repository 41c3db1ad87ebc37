"""The full service behind the nginx edge: signed URLs point at the edge, and a
finished job's files are pre-warmed into its cache."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cinecloud.testing.edge import NginxEdge, nginx_binary
from cinecloud.testing.service import Service, free_port


def test_prewarmed_through_the_edge(start_service: Callable[..., Service], tmp_path: Path) -> None:
    if nginx_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed, and CI must test the edge")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    secret = secrets.token_urlsafe(32)
    port = free_port()
    with NginxEdge(tmp_path / "nginx", f"127.0.0.1:{port}", secret) as edge:
        env = {
            "CINECLOUD_DELIVERY__SECRET": secret,
            "CINECLOUD_DELIVERY__BASE_URL": edge.url,
            "CINECLOUD_DELIVERY__PREWARM": "true",
        }
        svc = start_service(workers=1, env=env, port=port)
        with svc.client() as c:
            v = c.post("/v1/videos", json={"prompt": "a blue square", "steps": 2}).json()
            deadline = time.monotonic() + 60
            while v["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
                v = c.get(f"/v1/videos/{v['id']}").json()
        assert v["status"] == "completed", v
        outputs = v["outputs"]
        assert all(url.startswith(edge.url + "/cdn/") for url in outputs.values())
        # Pre-warm runs after ``complete`` has answered; the video is its last fetch.
        access_log = edge.prefix / "logs" / "access.log"
        deadline = time.monotonic() + 15
        while "/video.mp4?" not in access_log.read_text():
            assert time.monotonic() < deadline, "the edge never saw the pre-warm"
            time.sleep(0.1)
        # The pre-warm's time is the job's cdn_warm timing, once it is done.
        with svc.client() as c:
            deadline = time.monotonic() + 15
            timings = c.get(f"/v1/videos/{v['id']}").json()["timings"]
            while "cdn_warm" not in timings:
                assert time.monotonic() < deadline, f"no cdn_warm timing: {timings}"
                time.sleep(0.1)
                timings = c.get(f"/v1/videos/{v['id']}").json()["timings"]
        assert 0 < timings["cdn_warm"] < 15 and timings["total"] > 0
        # Our first requests for these files: hits, because pre-warm fetched them.
        poster = httpx.get(outputs["poster"])
        assert poster.status_code == 200 and poster.headers["x-cache-status"] == "HIT"
        video = httpx.get(outputs["video"], headers={"Range": "bytes=0-99"})
        assert (video.status_code, video.headers["x-cache-status"]) == (206, "HIT")
