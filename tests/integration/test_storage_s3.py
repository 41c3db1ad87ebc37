"""S3Store against a real S3-protocol HTTP server (moto's server mode on loopback):
the shared BlobStore contract plus multipart uploads and presigned URLs.

moto accepts any credentials and does not check SigV4 signatures, so these tests show
that presigned URLs carry SigV4 query auth and work without credentials, not that S3
rejects a forged one (that is S3's job, not ours).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from cinecloud.storage import BlobStore, S3Store, open_store
from cinecloud.testing.s3 import make_bucket, s3_test_config
from cinecloud.testing.storage_contract import BlobStoreContract

KEY = "t/ten_1/v/video_1/video.mp4"
MiB = 1024 * 1024


def _store(endpoint: str, **fields: object) -> S3Store:
    store = open_store(s3_test_config(endpoint, make_bucket(endpoint), **fields))
    assert isinstance(store, S3Store)
    return store


@pytest.mark.integration
class TestS3StoreContract(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_endpoint: str) -> BlobStore:
        return _store(s3_endpoint)


@pytest.fixture
def s3(s3_endpoint: str) -> S3Store:
    return _store(s3_endpoint, s3_multipart_threshold=5 * MiB, s3_multipart_chunksize=5 * MiB)


@pytest.mark.integration
def test_large_file_goes_up_in_parts(s3: S3Store, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB + 3)
    src = tmp_path / "big.mp4"
    src.write_bytes(data)
    info = s3.put_file(KEY, src, "video/mp4")
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    head = s3.client.head_object(Bucket=s3.bucket, Key=KEY)
    # A multipart object's ETag is the MD5 of its parts' MD5s, suffixed with the part count.
    assert head["ETag"].strip('"').endswith("-3")
    assert head["Metadata"]["sha256"] == info.sha256
    assert s3.get_bytes(KEY) == data


@pytest.mark.integration
def test_small_file_is_one_put(s3: S3Store) -> None:
    s3.put_bytes(KEY, b"small", "video/mp4")
    etag = s3.client.head_object(Bucket=s3.bucket, Key=KEY)["ETag"].strip('"')
    assert etag == hashlib.md5(b"small", usedforsecurity=False).hexdigest()


@pytest.mark.integration
def test_presigned_put_needs_no_credentials(s3: S3Store) -> None:
    body = os.urandom(100_000)
    url = s3.presigned_put(KEY, 600)
    assert "X-Amz-Signature=" in url and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    response = httpx.put(url, content=body, headers={"Content-Type": "video/mp4"})
    assert response.status_code == 200, response.text
    info = s3.stat(KEY)  # no sha256 metadata on this object: stat hashes the body
    assert info is not None
    assert (info.size, info.sha256, info.content_type) == (
        len(body),
        hashlib.sha256(body).hexdigest(),
        "video/mp4",
    )


@pytest.mark.integration
def test_presigned_get_serves_ranges(s3: S3Store) -> None:
    body = os.urandom(50_000)
    s3.put_bytes(KEY, body, "video/mp4")
    url = s3.presigned_get(KEY, 600)
    full = httpx.get(url)
    assert (full.status_code, full.content) == (200, body)
    assert full.headers["content-type"] == "video/mp4"
    ranged = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert (ranged.status_code, ranged.content) == (206, body[100:200])


@pytest.mark.integration
def test_open_range(s3: S3Store) -> None:
    body = bytes(range(256)) * 10
    s3.put_bytes(KEY, body, "application/octet-stream")
    with s3.open_range(KEY, (10, 19)) as fh:
        assert fh.read() == body[10:20]


@pytest.mark.integration
def test_open_store_needs_a_bucket(s3_endpoint: str) -> None:
    with pytest.raises(ValueError, match="s3_bucket"):
        open_store(s3_test_config(s3_endpoint, ""))
