"""The full path on S3 storage: a worker uploads through presigned PUTs (it holds no
bucket credentials), the control plane checks the objects, and the origin (or the
bucket itself) serves them. S3 is moto's server mode on loopback."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import httpx

from cinecloud.storage import S3Store, open_store
from cinecloud.testing.s3 import make_bucket, s3_env, s3_test_config
from cinecloud.testing.service import Service


def _done(c: httpx.Client) -> dict[str, object]:
    v = c.post("/v1/videos", json={"prompt": "a red circle", "steps": 2}).json()
    deadline = time.monotonic() + 60
    while v["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
        v = c.get(f"/v1/videos/{v['id']}").json()
    assert v["status"] == "completed", v
    return v


def test_s3_end_to_end(start_service: Callable[..., Service], s3_endpoint: str) -> None:
    bucket = make_bucket(s3_endpoint)
    env = s3_env(s3_endpoint, bucket)
    svc = start_service(workers=1, env=env)
    with svc.client() as c:
        v = _done(c)
    store = open_store(s3_test_config(s3_endpoint, bucket))
    assert isinstance(store, S3Store)
    keys = [k for k in store.list("t/") if f"/v/{v['id']}/" in k]
    assert any(k.endswith("/video.mp4") for k in keys), keys
    video_key = next(k for k in keys if k.endswith("/video.mp4"))
    stored = store.get_bytes(video_key)
    # Written by the worker's presigned PUT, not by the control plane (whose writes
    # carry the sha256 as metadata): the bytes went straight into the bucket.
    head = store.client.head_object(Bucket=bucket, Key=video_key)
    assert "sha256" not in head["Metadata"]
    assert head["ContentType"] == "video/mp4"
    url = str(v["outputs"]["video"])  # type: ignore[index]
    assert url.startswith(svc.url + "/cdn/")
    full = httpx.get(url)
    assert (full.status_code, full.content) == (200, stored)
    assert full.headers["etag"] == f'"{hashlib.sha256(stored).hexdigest()}"'
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert (part.status_code, part.content) == (206, stored[100:200])


def test_serve_from_bucket(start_service: Callable[..., Service], s3_endpoint: str) -> None:
    bucket = make_bucket(s3_endpoint)
    env = {**s3_env(s3_endpoint, bucket), "CINECLOUD_DELIVERY__SERVE_FROM": "bucket"}
    svc = start_service(workers=1, env=env)
    with svc.client() as c:
        v = _done(c)
        redirect = c.get(f"/v1/videos/{v['id']}/content", follow_redirects=False)
    url = str(v["outputs"]["poster"])  # type: ignore[index]
    assert url.startswith(f"{s3_endpoint}/{bucket}/t/") and "X-Amz-Signature=" in url
    poster = httpx.get(url)
    assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"
    assert redirect.status_code == 307
    assert redirect.headers["location"].startswith(f"{s3_endpoint}/{bucket}/")
    assert httpx.get(redirect.headers["location"]).status_code == 200
