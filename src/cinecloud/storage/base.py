"""The blob-store protocol, its records and errors, and the storage key rules.

Keys are ``/``-separated relative paths built from ``[A-Za-z0-9._-]``. Every
backend applies the same rules, so a key that works on the local disk works on
S3 and in a signed URL (where it is also the path nginx checks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = [
    "MAX_KEY_LENGTH",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "InvalidKey",
    "PutHelpers",
    "blob_key",
    "file_chunks",
    "validate_content_type",
    "validate_key",
    "validate_prefix",
]

MAX_KEY_LENGTH = 512
CHUNK = 1024 * 1024  # bytes read or written at a time

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]*", re.ASCII)
_PART_CHARS = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
# type/subtype with optional parameters; printable ASCII only (it becomes a header).
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(;[\x20-\x7e]*)?", re.ASCII)


@dataclass(frozen=True)
class BlobInfo:
    """What a store knows about one blob."""

    key: str
    size: int
    sha256: str
    content_type: str
    mtime: float


class BlobNotFound(KeyError):
    """No blob is stored under ``key``."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"blob not found: {self.key}"


class InvalidKey(ValueError):
    """A key or prefix breaks the storage key rules."""


def _check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise InvalidKey(f"{what} contains NUL")
    if "\\" in value:
        raise InvalidKey(f"{what} contains a backslash: {value!r}")
    if value.startswith("/"):
        raise InvalidKey(f"{what} must not start with '/': {value!r}")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidKey(f"{what} longer than {MAX_KEY_LENGTH} chars ({len(value)})")
    if not _KEY_CHARS.fullmatch(value):
        raise InvalidKey(f"{what} has chars outside [A-Za-z0-9._/-]: {value!r}")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid storage key, else raise InvalidKey.

    Besides the character rules, no part may be empty, ``.`` or ``..``: such keys
    would alias other keys on a file system.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKey("key is empty")
    _check_text(key, "key")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(f"key has an empty, '.' or '..' part: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a valid key (``""`` matches every key)."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a str, got {type(prefix).__name__}")
    _check_text(prefix, "prefix")
    parts = prefix.split("/")
    # The last part may be partial ("t/ten" matches "t/ten_1/..."); whole parts may not alias.
    for part in parts[:-1]:
        if part in ("", ".", ".."):
            raise InvalidKey(f"prefix has an empty, '.' or '..' part: {prefix!r}")
    if parts[-1] == "..":
        raise InvalidKey(f"prefix has a '..' part: {prefix!r}")
    return prefix


def _check_part(value: str, what: str) -> None:
    if not isinstance(value, str) or not _PART_CHARS.fullmatch(value) or value in (".", ".."):
        raise InvalidKey(f"{what} must match [A-Za-z0-9._-]+ and not be '.' or '..': {value!r}")


def blob_key(tenant_id: str, job_id: str, name: str) -> str:
    """The key of one job artifact: ``t/{tenant}/v/{job}/{name}``.

    ``name`` may contain ``/`` (e.g. ``hls/720p/seg_00001.ts``); the tenant and
    job ids may not.
    """
    _check_part(tenant_id, "tenant_id")
    _check_part(job_id, "job_id")
    if not isinstance(name, str) or not name:
        raise InvalidKey("name is empty")
    return validate_key(f"t/{tenant_id}/v/{job_id}/{name}")


def validate_content_type(content_type: str) -> str:
    """Return ``content_type`` if it is a plain ``type/subtype[; params]`` value."""
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(f"invalid content_type: {content_type!r}")
    return content_type


@runtime_checkable
class BlobStore(Protocol):
    """Where artifacts live: the local disk, S3, or a fake.

    Every implementation passes the contract in
    :mod:`cinecloud.testing.storage_contract`. Writes replace a blob whole: a
    reader sees the old content or the new, never a mix. ``list`` yields keys in
    lexicographic order; prefixes are plain string prefixes, as on S3.
    """

    def put_bytes(self, key: str, data: bytes, content_type: str) -> BlobInfo: ...

    def put_file(self, key: str, path: Path, content_type: str) -> BlobInfo: ...

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str,
        max_bytes: int | None = None,
    ) -> BlobInfo:
        """Store the chunks; over ``max_bytes`` raise ValueError and keep nothing."""
        ...

    def stat(self, key: str) -> BlobInfo | None: ...

    def open(self, key: str) -> BinaryIO:
        """A binary reader; raises BlobNotFound."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """The file on local disk (for zero-copy serving), or None for remote stores."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing key is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every blob whose key starts with ``prefix`` (not ``""``); return the count."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]: ...


def file_chunks(path: Path) -> Iterator[bytes]:
    """The bytes of ``path`` in :data:`CHUNK`-sized pieces."""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


class PutHelpers:
    """``put_bytes`` and ``put_file`` for a backend, both through its ``put_stream``."""

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str,
        max_bytes: int | None = None,
    ) -> BlobInfo:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, content_type: str) -> BlobInfo:
        return self.put_stream(key, [bytes(data)], content_type)

    def put_file(self, key: str, path: Path, content_type: str) -> BlobInfo:
        validate_key(key)
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return self.put_stream(key, file_chunks(Path(path)), content_type)
