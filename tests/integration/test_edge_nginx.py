"""The nginx edge (deploy/nginx/cinecloud.conf) in front of a running origin, both real
processes on loopback: signature checks at the edge, the slice cache, ranges, CORS."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from cinecloud.delivery import sign, signed_url
from cinecloud.storage import LocalStore
from cinecloud.testing.edge import NginxEdge, OriginProcess, nginx_binary

SECRET = secrets.token_urlsafe(32)
MiB = 1024 * 1024
PAYLOAD = os.urandom(3 * MiB + 123)  # four 1 MiB slices, the last one short


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NginxEdge, LocalStore]]:
    if nginx_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed, and CI must test the edge (.ci/run installs it)")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    home = tmp_path_factory.mktemp("edge")
    store = LocalStore(home / "blobs")
    with (
        OriginProcess(home / "origin", home / "blobs", SECRET) as origin,
        NginxEdge(home / "nginx", origin.url, SECRET) as nginx,
    ):
        yield nginx, store


def _put(store: LocalStore, data: bytes = PAYLOAD, name: str = "video.mp4") -> str:
    key = f"t/ten_1/v/{secrets.token_hex(6)}/{name}"
    store.put_bytes(key, data, "video/mp4")
    return key


def _url(edge: NginxEdge, key: str, expires: int | None = None) -> str:
    expires = expires if expires is not None else int(time.time()) + 3600
    return signed_url(edge.url, key, secret=SECRET, expires=expires)


@pytest.mark.integration
def test_full_fetch_then_cache_hit(edge: tuple[NginxEdge, LocalStore]) -> None:
    nginx, store = edge
    key = _put(store)
    first = httpx.get(_url(nginx, key))
    assert first.status_code == 200, first.text
    assert first.content == PAYLOAD
    assert first.headers["content-type"] == "video/mp4"
    assert first.headers["x-cache-status"] == "MISS"
    assert first.headers["etag"].strip('"') == store.stat(key).sha256  # type: ignore[union-attr]
    # Another signature for the same file: the cache key leaves the signature out.
    second = httpx.get(_url(nginx, key, int(time.time()) + 7200))
    assert (second.status_code, second.headers["x-cache-status"]) == (200, "HIT")
    assert second.content == PAYLOAD
    store.delete(key)  # the origin no longer has it; the edge still serves its copy
    assert httpx.get(_url(nginx, key)).content == PAYLOAD


@pytest.mark.integration
@pytest.mark.parametrize(
    ("first", "last"), [(0, 99), (MiB - 10, MiB + 9), (2 * MiB, 3 * MiB + 122), (5, 5)]
)
def test_range_after_full_fetch_is_a_hit(
    edge: tuple[NginxEdge, LocalStore], first: int, last: int
) -> None:
    nginx, store = edge
    key = _put(store)
    assert httpx.get(_url(nginx, key)).status_code == 200
    part = httpx.get(_url(nginx, key), headers={"Range": f"bytes={first}-{last}"})
    assert part.status_code == 206, part.text
    assert part.content == PAYLOAD[first : last + 1]
    assert part.headers["content-range"] == f"bytes {first}-{last}/{len(PAYLOAD)}"
    assert part.headers["x-cache-status"] == "HIT"


@pytest.mark.integration
def test_cold_range_fetches_only_its_slices(edge: tuple[NginxEdge, LocalStore]) -> None:
    nginx, store = edge
    key = _put(store)
    url = _url(nginx, key)
    cold = httpx.get(url, headers={"Range": "bytes=2097100-2097199"})
    assert (cold.status_code, cold.headers["x-cache-status"]) == (206, "MISS")
    assert cold.content == PAYLOAD[2097100:2097200]
    warm = httpx.get(url, headers={"Range": "bytes=2097152-2097161"})
    assert (warm.status_code, warm.headers["x-cache-status"]) == (206, "HIT")
    assert warm.content == PAYLOAD[2097152:2097162]
    other_slice = httpx.get(url, headers={"Range": "bytes=0-9"})
    assert (other_slice.status_code, other_slice.headers["x-cache-status"]) == (206, "MISS")
    suffix = httpx.get(url, headers={"Range": "bytes=-10"})
    assert (suffix.status_code, suffix.content) == (206, PAYLOAD[-10:])


@pytest.mark.integration
def test_bad_signatures_stop_at_the_edge(edge: tuple[NginxEdge, LocalStore]) -> None:
    nginx, store = edge
    key = _put(store, b"poster", "poster.jpg")
    url = _url(nginx, key)
    parts = urlsplit(url)
    sig = parse_qs(parts.query)["s"][0]
    expires = parse_qs(parts.query)["e"][0]
    tampered = url.replace(f"s={sig}", "s=" + ("A" if sig[0] != "A" else "B") + sig[1:])
    for bad in (tampered, f"{nginx.url}{parts.path}", url.replace(f"e={expires}", "e=1")):
        resp = httpx.get(bad)
        assert resp.status_code == 403, bad
        assert resp.json()["error"]["code"] == "invalid_signature"
        assert resp.headers["access-control-allow-origin"] == "*"
    past = int(time.time()) - 10
    expired = f"{nginx.url}{parts.path}?e={past}&s={sign(parts.path, past, SECRET)}"
    resp = httpx.get(expired)
    assert resp.status_code == 410
    assert resp.json()["error"]["code"] == "url_expired"
    # A wrong signature is 403 even when the URL has also expired (as the origin does).
    wrong_and_expired = expired.replace("&s=", "&s=x")
    assert httpx.get(wrong_and_expired).status_code == 403
    assert httpx.get(url).status_code == 200


@pytest.mark.integration
def test_cors_for_the_web_player(edge: tuple[NginxEdge, LocalStore]) -> None:
    nginx, store = edge
    url = _url(nginx, _put(store, b"x" * 1000))
    resp = httpx.get(url, headers={"Origin": "https://player.example", "Range": "bytes=0-9"})
    assert resp.status_code == 206
    assert resp.headers["access-control-allow-origin"] == "*"
    exposed = {h.strip().lower() for h in resp.headers["access-control-expose-headers"].split(",")}
    assert {"content-range", "x-cache-status", "etag", "accept-ranges"} <= exposed
    pre = httpx.options(
        url,
        headers={
            "Origin": "https://player.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert pre.status_code == 204
    assert "Range" in pre.headers["access-control-allow-headers"]
    assert "GET" in pre.headers["access-control-allow-methods"]


@pytest.mark.integration
def test_missing_blob_and_other_paths(edge: tuple[NginxEdge, LocalStore]) -> None:
    nginx, _ = edge
    missing = httpx.get(_url(nginx, "t/ten_1/v/nothing/video.mp4"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{nginx.url}/v1/videos").status_code == 404


@pytest.mark.integration
def test_rendered_config_passes_nginx_t(edge: tuple[NginxEdge, LocalStore]) -> None:
    nginx, _ = edge
    conf = nginx.prefix / "nginx.conf"
    args = ["-p", f"{nginx.prefix}/", "-c", str(conf), "-e", str(nginx.error_log)]
    check = subprocess.run([nginx.binary, "-t", *args], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = conf.read_text()
    assert f'secure_link_md5 "$secure_link_expires$uri {SECRET}";' in text
    assert "${EDGE_" not in text
    assert 'proxy_cache_key "$uri|$slice_range";' in text


@pytest.mark.integration
def test_hls_plays_through_the_edge(
    edge: tuple[NginxEdge, LocalStore], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import av
    import numpy as np

    from cinecloud.render import write_hls

    nginx, store = edge
    frames = np.stack([np.full((48, 64, 3), 5 * i, np.uint8) for i in range(40)])
    out = tmp_path_factory.mktemp("hls")
    job = secrets.token_hex(6)
    for f in write_hls(frames, out, 8, display_size=(1280, 720)):
        store.put_file(f"t/ten_1/v/{job}/{f.name}", f.path, f.content_type)
    master = _url(nginx, f"t/ten_1/v/{job}/hls/master.m3u8")
    with av.open(master) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (1280, 720)
        assert sum(1 for _ in container.decode(stream)) == 40
    # Playlists carry per-expiry signatures: never from the cache. Segments are cached.
    again = httpx.get(master)
    assert again.status_code == 200 and again.headers["x-cache-status"] != "HIT"
    variant = again.text.splitlines()[-1]
    base = f"{nginx.url}/cdn/t/ten_1/v/{job}/hls"
    media = httpx.get(f"{base}/{variant}")
    assert media.status_code == 200, media.text
    segment = next(line for line in media.text.splitlines() if line.startswith("seg_"))
    name = variant.split("/")[0]
    assert httpx.get(f"{base}/{name}/{segment}").headers["x-cache-status"] == "HIT"
    unsigned = httpx.get(f"{base}/{name}/{segment.split('?')[0]}")
    assert unsigned.status_code == 403


@pytest.mark.integration
def test_cli_renders_a_config_nginx_accepts(tmp_path_factory: pytest.TempPathFactory) -> None:
    binary = nginx_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed, and CI must test the edge")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    prefix = tmp_path_factory.mktemp("cli-edge")
    for sub in ("logs", "temp", "cache"):
        (prefix / sub).mkdir()
    env = {**os.environ, "CINECLOUD_SERVER__HOME": str(prefix / "home")}
    args = ["--listen", "127.0.0.1:18080", "--cache-dir", str(prefix / "cache"), "--user", "root"]
    rendered = subprocess.run(
        [sys.executable, "-m", "cinecloud.cli", "edge-config", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    secret = (prefix / "home" / "secret").read_text().strip()
    assert f'$uri {secret}";' in rendered
    conf = prefix / "nginx.conf"
    conf.write_text(rendered)
    test_args = ["-t", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "logs/error.log")]
    check = subprocess.run([binary, *test_args], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.integration
def test_prewarm_makes_the_first_view_a_hit(edge: tuple[NginxEdge, LocalStore]) -> None:
    from cinecloud.delivery.prewarm import warm

    nginx, store = edge
    keys = [_put(store), _put(store, b"jpeg" * 100, "poster.jpg")]
    with httpx.Client() as client:
        results = warm([_url(nginx, k) for k in keys], client)
    assert [(r.status, r.cache, r.size) for r in results] == [
        (200, "MISS", len(PAYLOAD)),
        (200, "MISS", 400),
    ]
    for key in keys:
        assert httpx.get(_url(nginx, key)).headers["x-cache-status"] == "HIT"
    missing = warm([_url(nginx, "t/ten_1/v/none/x.jpg"), "http://127.0.0.1:9/x"], httpx.Client())
    assert [r.status for r in missing] == [404, 0]
