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

__all__ = [
    "MAX_KEY_LENGTH",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "InvalidKey",
    "LocalStore",
    "blob_key",
    "open_store",
    "validate_content_type",
    "validate_key",
    "validate_prefix",
]


def open_store(cfg: StorageConfig) -> BlobStore:
    """The store ``cfg.backend`` names: ``"local"`` keeps blobs under ``cfg.root``."""
    if cfg.backend == "local":
        return LocalStore(cfg.root)
    raise ValueError(f"unknown storage backend: {cfg.backend!r}")
