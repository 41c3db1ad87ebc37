"""The origin router over real HTTP (starlette TestClient) and a real LocalStore.

Every HTTP test runs three times: with the blob on local disk (served through
FileResponse), through a store that has no local path (streamed from
``store.open``), and from an S3 bucket on a real S3-protocol server (ranges fetched
with ``open_range``), so all ways of sending agree.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cinecloud.delivery import (
    CACHE_CONTROL,
    RangeNotSatisfiable,
    create_origin_router,
    etag_matches,
    parse_range,
    signed_url,
)
from cinecloud.storage import BlobStore, LocalStore, open_store
from cinecloud.testing.s3 import make_bucket, s3_test_config

SECRET = "origin-test-secret"
NOW = 1_700_000_000
EXPIRES = NOW + 3600
KEY = "t/ten_1/v/video_1/video.mp4"
PAYLOAD = os.urandom(300 * 1024 + 7)
SIZE = len(PAYLOAD)
ETAG = f'"{hashlib.sha256(PAYLOAD).hexdigest()}"'


class RemoteLikeStore(LocalStore):
    """A LocalStore that, like S3, offers no local path: the origin must stream."""

    def local_path(self, key: str) -> Path | None:
        return None


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "streamed", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    store: BlobStore
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        store = open_store(s3_test_config(endpoint, make_bucket(endpoint)))
    else:
        cls = LocalStore if request.param == "local" else RemoteLikeStore
        store = cls(tmp_path / "blobs")
    store.put_bytes(KEY, PAYLOAD, "video/mp4")
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(store: BlobStore, clock: Clock) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_origin_router(store, secret=SECRET, clock=clock))
    with TestClient(app) as client:
        yield client


def url(key: str = KEY, expires: int = EXPIRES) -> str:
    full = signed_url("http://testserver", key, secret=SECRET, expires=expires)
    parts = urlsplit(full)
    return f"{parts.path}?{parts.query}"


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {
        "error": {
            "code": code,
            "message": response.json()["error"]["message"],
            "param": None,
            "type": "invalid_request_error",
        }
    }
    assert response.json()["error"]["message"]
    assert response.headers["cache-control"] == "no-store"


# ---------------------------------------------------------------- 200 / HEAD


@pytest.mark.integration
def test_full_body(client: TestClient) -> None:
    response = client.get(url())
    assert response.status_code == 200
    assert response.content == PAYLOAD
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == str(SIZE)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == ETAG
    assert (
        response.headers["cache-control"] == CACHE_CONTROL == "public, max-age=31536000, immutable"
    )


@pytest.mark.integration
def test_head(client: TestClient) -> None:
    response = client.head(url())
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(SIZE)
    assert (response.headers["etag"], response.headers["accept-ranges"]) == (ETAG, "bytes")
    ranged = client.head(url(), headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.content == b""
    assert ranged.headers["content-range"] == f"bytes 10-19/{SIZE}"
    assert ranged.headers["content-length"] == "10"


@pytest.mark.integration
@pytest.mark.parametrize(
    "content_type", ["text/plain", "image/webp", "text/plain; charset=latin-1"]
)
def test_content_type_is_sent_as_stored(
    client: TestClient, store: BlobStore, content_type: str
) -> None:
    key = "t/ten_1/v/video_1/other"
    store.put_bytes(key, b"hello", content_type)
    response = client.get(url(key))
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == b"hello"


@pytest.mark.integration
def test_empty_blob(client: TestClient, store: BlobStore) -> None:
    key = "t/ten_1/v/video_1/empty.bin"
    store.put_bytes(key, b"", "application/octet-stream")
    response = client.get(url(key))
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == "0"
    ranged = client.get(url(key), headers={"Range": "bytes=0-"})
    assert_error(ranged, 416, "range_not_satisfiable")
    assert ranged.headers["content-range"] == "bytes */0"


@pytest.mark.integration
def test_playlists_come_with_signed_uris(client: TestClient, store: BlobStore) -> None:
    base = "t/ten_1/v/video_1/hls"
    master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n480p/index.m3u8\n"
    media = '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:6.0,\nseg_00000.m4s\n'
    store.put_bytes(f"{base}/master.m3u8", master.encode(), "application/vnd.apple.mpegurl")
    store.put_bytes(f"{base}/480p/index.m3u8", media.encode(), "application/vnd.apple.mpegurl")
    response = client.get(url(f"{base}/master.m3u8"), headers={"Range": "bytes=0-3"})
    assert response.status_code == 200  # whole: the body depends on the expiry
    assert response.headers["cache-control"] == "private, no-store"
    variant = response.text.splitlines()[-1]
    assert variant.startswith("480p/index.m3u8?e=")
    sub = client.get(f"/cdn/{base}/{variant}")
    assert sub.status_code == 200, sub.text
    lines = sub.text.splitlines()
    init = lines[1].split('"')[1]
    assert init.startswith("init.mp4?e=") and lines[3].startswith("seg_00000.m4s?e=")
    store.put_bytes(f"{base}/480p/init.mp4", b"init", "video/mp4")
    assert client.get(f"/cdn/{base}/480p/{init}").content == b"init"


# ---------------------------------------------------------------- ranges


@pytest.mark.integration
@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-199999", 100, 199999),
        ("bytes=65530-65545", 65530, 65545),
        ("bytes=5-", 5, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=-999999999", 0, SIZE - 1),
        ("bytes=250000-99999999", 250000, SIZE - 1),
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
        ("bytes=0-99,", 0, 99),
        ("Bytes = 7 - 8", 7, 8),
    ],
)
def test_single_range(client: TestClient, header: str, first: int, last: int) -> None:
    response = client.get(url(), headers={"Range": header})
    assert response.status_code == 206
    assert response.content == PAYLOAD[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert (response.headers["etag"], response.headers["content-type"]) == (ETAG, "video/mp4")


@pytest.mark.integration
@pytest.mark.parametrize(
    "header",
    [
        f"bytes={SIZE}-",
        "bytes=99999999-",
        "bytes=-0",
        "bytes=5-3",
        "bytes=abc",
        "bytes=",
        "bytes=-",
    ],
)
def test_unsatisfiable_range(client: TestClient, header: str) -> None:
    response = client.get(url(), headers={"Range": header})
    assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.integration
@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "0-5"])
def test_ranges_we_answer_with_the_whole_blob(client: TestClient, header: str) -> None:
    response = client.get(url(), headers={"Range": header})
    assert response.status_code == 200
    assert response.content == PAYLOAD


@pytest.mark.integration
def test_if_range(client: TestClient) -> None:
    same = client.get(url(), headers={"Range": "bytes=0-9", "If-Range": ETAG})
    assert (same.status_code, same.content) == (206, PAYLOAD[:10])
    changed = client.get(url(), headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert (changed.status_code, changed.content) == (200, PAYLOAD)


# ---------------------------------------------------------------- 304


@pytest.mark.integration
@pytest.mark.parametrize("value", [ETAG, f"W/{ETAG}", f'"other", {ETAG}', "*"])
def test_not_modified(client: TestClient, value: str) -> None:
    response = client.get(url(), headers={"If-None-Match": value, "Range": "bytes=0-9"})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == ETAG
    assert response.headers["cache-control"] == CACHE_CONTROL


@pytest.mark.integration
def test_other_etag_gets_the_body(client: TestClient) -> None:
    response = client.get(url(), headers={"If-None-Match": '"something-else"'})
    assert (response.status_code, response.content) == (200, PAYLOAD)


# ---------------------------------------------------------------- 403 / 410 / 404


@pytest.mark.integration
def test_tampered_or_missing_signature(client: TestClient, store: BlobStore) -> None:
    store.put_bytes("t/ten_1/v/video_1/poster.jpg", b"jpeg", "image/jpeg")
    good = url()
    path, query = good.split("?")
    sig = query.split("&s=")[1]
    bad_sig = ("B" if sig[0] != "B" else "C") + sig[1:]
    for candidate in [
        path,
        f"{path}?e={EXPIRES}",
        f"{path}?s={sig}",
        f"{path}?e={EXPIRES}&s={bad_sig}",
        f"{path}?e={EXPIRES + 1}&s={sig}",
        f"{path}?e=soon&s={sig}",
        f"/cdn/t/ten_1/v/video_1/poster.jpg?{query}",
    ]:
        assert_error(client.get(candidate), 403, "invalid_signature")
    head = client.head(path)
    assert (head.status_code, head.content) == (403, b"")


@pytest.mark.integration
def test_expired(client: TestClient, clock: Clock) -> None:
    clock.now = EXPIRES
    assert client.get(url()).status_code == 200
    clock.now = EXPIRES + 1
    assert_error(client.get(url()), 410, "url_expired")
    assert_error(client.get(url(), headers={"Range": "bytes=0-1"}), 410, "url_expired")


@pytest.mark.integration
def test_unknown_key(client: TestClient, store: BlobStore) -> None:
    assert_error(client.get(url("t/ten_1/v/video_1/missing.mp4")), 404, "not_found")
    assert_error(client.get(url("t/ten_1/v/video_1")), 404, "not_found")
    store.delete(KEY)
    assert_error(client.get(url()), 404, "not_found")


@pytest.mark.integration
def test_other_methods_not_allowed(client: TestClient) -> None:
    assert client.post(url()).status_code == 405
    assert client.delete(url()).status_code == 405


@pytest.mark.integration
def test_router_rejects_empty_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="secret"):
        create_origin_router(LocalStore(tmp_path), secret="", clock=lambda: 0.0)


# ---------------------------------------------------------------- pure helpers


@pytest.mark.unit
@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-", 10, (0, 9)),
        ("bytes=3-4", 10, (3, 4)),
        ("bytes=3-400", 10, (3, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=1-2,4-5", 10, None),
        ("lines=1-2", 10, None),
        ("garbage", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=-5", 0), ("bytes=4-3", 10), ("bytes=x-1", 10)],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


@pytest.mark.unit
def test_etag_matches() -> None:
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches('"b", "a"', '"a"')
    assert etag_matches(" * ", '"a"')
    assert not etag_matches('"b"', '"a"')
    assert not etag_matches("a", '"a"')
