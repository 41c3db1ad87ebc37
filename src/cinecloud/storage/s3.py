"""S3Store: blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2).

Each object carries its sha256 as user metadata (``x-amz-meta-sha256``) and its
content type as ``Content-Type``, so ``stat`` is one ``HEAD``. An object written
around the store (a presigned PUT from a worker, which cannot sign metadata it
does not know in advance) has no such metadata; ``stat`` then hashes the body,
as LocalStore does for a file without its sidecar.

Writes spool to a temporary file first (in memory up to a few MiB), hashing as
they go, and only then upload: S3 replaces an object whole when a PUT or a
multipart upload completes, so a reader sees the old object or the new one, and
a write that fails or exceeds ``max_bytes`` leaves the old object untouched.
Files at or over ``multipart_threshold`` go up as a multipart upload in parts
of ``multipart_chunksize``, several parts at once.

Workers never hold bucket credentials: the control plane hands them presigned
PUT URLs (:meth:`S3Store.presigned_put`). Where a deployment serves straight
from the bucket rather than through the origin, :meth:`S3Store.presigned_get`
gives the download URL.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from cinecloud.config import StorageConfig
from cinecloud.storage.base import (
    CHUNK,
    BlobInfo,
    BlobNotFound,
    InvalidKey,
    PutHelpers,
    validate_content_type,
    validate_key,
    validate_prefix,
)

__all__ = ["S3Store", "s3_client"]


_SPOOL_BYTES = 8 * 1024 * 1024
_SHA_META = "sha256"
_UNKNOWN_TYPE = "application/octet-stream"
_MISSING = {"404", "NoSuchKey", "NotFound"}


def s3_client(cfg: StorageConfig) -> Any:
    """A boto3 S3 client for ``cfg`` (SigV4, path-style addressing when an endpoint is set)."""
    import boto3
    from botocore.config import Config as BotoConfig

    addressing = "path" if cfg.s3_endpoint_url else "auto"
    boto_cfg = BotoConfig(
        signature_version="s3v4",
        s3={"addressing_style": addressing},
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
    )
    return boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint_url or None,
        region_name=cfg.s3_region,
        aws_access_key_id=cfg.s3_access_key_id or None,
        aws_secret_access_key=cfg.s3_secret_access_key or None,
        config=boto_cfg,
    )


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return code in _MISSING


def _check_max_bytes(max_bytes: int | None) -> None:
    if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 0):
        raise ValueError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")


def _spool(chunks: Iterable[bytes], key: str, max_bytes: int | None) -> tuple[IO[bytes], str]:
    """Copy ``chunks`` into a temp file, hashing them; the file is rewound, its sha256 given."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (returned open)
    try:
        digest = hashlib.sha256()
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ValueError(f"blob exceeds max_bytes={max_bytes}: {key}")
            digest.update(chunk)
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return cast(IO[bytes], spool), digest.hexdigest()


class S3Store(PutHelpers):
    """A :class:`~cinecloud.storage.base.BlobStore` on one S3 bucket."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        multipart_threshold: int = 16 * 1024 * 1024,
        multipart_chunksize: int = 8 * 1024 * 1024,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        if not bucket:
            raise ValueError("bucket is empty")
        self.client = client
        self.bucket = bucket
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=4,
        )

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> S3Store:
        return cls(
            s3_client(cfg),
            cfg.s3_bucket,
            multipart_threshold=cfg.s3_multipart_threshold,
            multipart_chunksize=cfg.s3_multipart_chunksize,
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r})"

    # ------------------------------------------------------------ writes

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str,
        max_bytes: int | None = None,
    ) -> BlobInfo:
        validate_key(key)
        validate_content_type(content_type)
        _check_max_bytes(max_bytes)
        spool, sha256 = _spool(chunks, key, max_bytes)
        with spool:
            extra = {"ContentType": content_type, "Metadata": {_SHA_META: sha256}}
            self.client.upload_fileobj(
                spool, self.bucket, key, ExtraArgs=extra, Config=self._transfer
            )
        info = self.stat(key)
        if info is None:
            raise OSError(f"object vanished right after upload: {key}")
        return info

    # ------------------------------------------------------------ reads

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return head

    def stat(self, key: str) -> BlobInfo | None:
        validate_key(key)
        head = self._head(key)
        if head is None:
            return None
        sha256 = head.get("Metadata", {}).get(_SHA_META)
        if not sha256:
            try:
                sha256 = self._hash_object(key)
            except BlobNotFound:
                return None
        ctype = head.get("ContentType") or _UNKNOWN_TYPE
        mtime = head["LastModified"].timestamp()
        return BlobInfo(key, int(head["ContentLength"]), sha256, ctype, mtime)

    def _hash_object(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.open(key) as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def open(self, key: str) -> BinaryIO:
        return self.open_range(key, None)

    def open_range(self, key: str, byte_range: tuple[int, int] | None) -> BinaryIO:
        """A reader of the whole object, or of bytes ``first..last`` (inclusive)."""
        validate_key(key)
        extra = {} if byte_range is None else {"Range": "bytes={}-{}".format(*byte_range)}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        except Exception as exc:
            if _is_missing(exc):
                raise BlobNotFound(key) from None
            raise
        return cast(BinaryIO, response["Body"])

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    # ------------------------------------------------------------ URLs

    def presigned_put(self, key: str, expires_in: int) -> str:
        """A URL that lets its holder PUT ``key`` (any content type) for ``expires_in`` s."""
        validate_key(key)
        params = {"Bucket": self.bucket, "Key": key}
        url: str = self.client.generate_presigned_url("put_object", params, expires_in)
        return url

    def presigned_get(self, key: str, expires_in: int) -> str:
        """A URL that lets its holder GET ``key`` (ranges included) for ``expires_in`` s."""
        validate_key(key)
        params = {"Bucket": self.bucket, "Key": key}
        url: str = self.client.generate_presigned_url("get_object", params, expires_in)
        return url

    # ------------------------------------------------------------ deletes

    def delete(self, key: str) -> None:
        validate_key(key)
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        if not prefix:
            raise InvalidKey("prefix must not be empty for delete_prefix")
        count = 0
        batch: list[str] = []
        for key in self.list(prefix):
            batch.append(key)
            if len(batch) == 1000:  # the most one DeleteObjects call takes
                count += self._delete_batch(batch)
                batch = []
        return count + (self._delete_batch(batch) if batch else 0)

    def _delete_batch(self, keys: list[str]) -> int:
        objects = [{"Key": key} for key in keys]
        response = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
        )
        errors = response.get("Errors", [])
        if errors:
            raise OSError(f"could not delete {len(errors)} objects, e.g. {errors[0]}")
        return len(keys)

    # ------------------------------------------------------------ list

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[str]:
        # S3 lists keys in UTF-8 byte order, which for our ASCII keys is lexicographic.
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                yield str(item["Key"])
