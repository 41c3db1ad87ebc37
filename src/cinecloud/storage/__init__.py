"""Blob storage: the protocol, its key rules, and the backends."""

from __future__ import annotations

from cinecloud.config import StorageConfig
from cinecloud.storage.base import (
    MAX_KEY_LENGTH,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    InvalidKey,
    blob_key,
    validate_content_type,
    validate_key,
    validate_prefix,
)
from cinecloud.storage.local import LocalStore
from cinecloud.storage.s3 import S3Store

__all__ = [
    "MAX_KEY_LENGTH",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "InvalidKey",
    "LocalStore",
    "S3Store",
    "blob_key",
    "open_store",
    "validate_content_type",
    "validate_key",
    "validate_prefix",
]


def open_store(cfg: StorageConfig) -> BlobStore:
    """The store ``cfg.backend`` names: ``"local"`` keeps blobs under ``cfg.root``,
    ``"s3"`` in ``cfg.s3_bucket``."""
    if cfg.backend == "local":
        return LocalStore(cfg.root)
    if cfg.backend == "s3":
        if not cfg.s3_bucket:
            raise ValueError("storage.s3_bucket is required for the s3 backend")
        return S3Store.from_config(cfg)
    raise ValueError(f"unknown storage backend: {cfg.backend!r}")
