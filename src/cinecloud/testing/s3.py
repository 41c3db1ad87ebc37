"""A real S3-protocol HTTP server on loopback for tests: moto's server mode.

The server speaks the S3 REST API (SigV4, multipart uploads, presigned URLs,
ranges) over HTTP, so :class:`~cinecloud.storage.s3.S3Store` talks to it exactly
as it would to AWS or MinIO::

    with moto_s3_server() as endpoint:
        cfg = s3_test_config(endpoint, make_bucket(endpoint))
        store = open_store(cfg)
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cinecloud.config import StorageConfig

__all__ = [
    "S3_TEST_KEYS",
    "make_bucket",
    "moto_s3_server",
    "s3_env",
    "s3_test_config",
]

#: Credentials the test server accepts (it accepts any; these keep boto3 from looking further).
S3_TEST_KEYS = ("cinecloud-test-key", "cinecloud-test-secret")


@contextmanager
def moto_s3_server(host: str = "127.0.0.1") -> Iterator[str]:
    """Run moto's S3 server on ``host`` and a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    try:
        bound_host, port = server.get_host_and_port()
        yield f"http://{bound_host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    """The ``CINECLOUD_*`` settings that put a ``cinecloud serve`` on ``bucket``."""
    key_id, secret = S3_TEST_KEYS
    return {
        "CINECLOUD_STORAGE__BACKEND": "s3",
        "CINECLOUD_STORAGE__S3_BUCKET": bucket,
        "CINECLOUD_STORAGE__S3_ENDPOINT_URL": endpoint,
        "CINECLOUD_STORAGE__S3_ACCESS_KEY_ID": key_id,
        "CINECLOUD_STORAGE__S3_SECRET_ACCESS_KEY": secret,
    }


def s3_test_config(endpoint: str, bucket: str, **fields: object) -> StorageConfig:
    """A StorageConfig for the S3 backend against ``endpoint``."""
    key_id, secret = S3_TEST_KEYS
    base: dict[str, object] = {
        "backend": "s3",
        "root": Path("unused"),
        "s3_bucket": bucket,
        "s3_endpoint_url": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": key_id,
        "s3_secret_access_key": secret,
    }
    return StorageConfig(**{**base, **fields})  # type: ignore[arg-type]


def make_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a fresh bucket on ``endpoint``; returns its name."""
    from cinecloud.storage.s3 import s3_client

    bucket = name or f"cinecloud-{secrets.token_hex(6)}"
    s3_client(s3_test_config(endpoint, bucket)).create_bucket(Bucket=bucket)
    return bucket
