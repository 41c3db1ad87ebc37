"""LocalStore: blobs as files on the local disk.

Layout under ``root``::

    data/<key>          the blob itself (what ``local_path`` returns)
    meta/<key>          JSON sidecar: sha256, content type, and the data file's identity

Writes go to a temp file in the target's directory and are moved into place
with ``os.replace``, so readers see the old blob or the new one, never a part.
Temp names contain ``~``, which no key may contain, so they never show up as
keys. The meta tree mirrors the data tree name for name, so a sidecar can never
clash with a key. The sidecar records the data file's inode, size and mtime;
when those disagree with the file (a crash or a concurrent overwrite between
the two renames), ``stat`` recomputes the hash instead of trusting the sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

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

__all__ = ["LocalStore"]


_UNKNOWN_TYPE = "application/octet-stream"


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _unlink(path: Path) -> bool:
    """Remove a file; False when there was no file to remove."""
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    return True


def _prune(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents while they are empty, up to ``stop``."""
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _write_chunks(fh: BinaryIO, chunks: Iterable[bytes], key: str, max_bytes: int | None) -> str:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise ValueError(f"blob exceeds max_bytes={max_bytes}: {key}")
        digest.update(chunk)
        fh.write(chunk)
    fh.flush()
    os.fsync(fh.fileno())
    return digest.hexdigest()


class LocalStore(PutHelpers):
    """A :class:`~cinecloud.storage.base.BlobStore` on a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._data = self.root / "data"
        self._meta = self.root / "meta"
        self._data.mkdir(parents=True, exist_ok=True)
        self._meta.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # ------------------------------------------------------------ paths

    def _data_path(self, key: str) -> Path:
        return self._data / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self._meta / validate_key(key)

    def _create(self, path: Path, key: str) -> BinaryIO:
        """Open a new file for writing, making its folder (again, if a delete pruned it)."""
        for _ in range(5):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise InvalidKey(f"key is under an existing blob: {key}") from None
            try:
                return path.open("xb")
            except FileNotFoundError:
                continue  # the folder was pruned between mkdir and open
        raise OSError(f"could not create a temp file for {key}")

    # ------------------------------------------------------------ writes

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str,
        max_bytes: int | None = None,
    ) -> BlobInfo:
        data_path = self._data_path(key)
        meta_path = self._meta_path(key)
        validate_content_type(content_type)
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 0):
            raise ValueError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
        if data_path.is_dir():
            raise InvalidKey(f"key is a prefix of existing blobs: {key}")
        token = secrets.token_hex(8)
        tmp = data_path.with_name(f".{data_path.name}~{token}.tmp")
        meta_tmp = meta_path.with_name(f".{meta_path.name}~{token}.tmp")
        try:
            with self._create(tmp, key) as fh:
                sha256 = _write_chunks(fh, chunks, key, max_bytes)
            st = tmp.stat()
            meta = {"sha256": sha256, "content_type": content_type, "identity": _identity(st)}
            with self._create(meta_tmp, key) as fh:
                fh.write(json.dumps(meta).encode())
            os.replace(meta_tmp, meta_path)
            os.replace(tmp, data_path)
        except BaseException:
            _unlink(tmp)
            _unlink(meta_tmp)
            if not data_path.exists():
                _unlink(meta_path)
                _prune(data_path.parent, self._data)
                _prune(meta_path.parent, self._meta)
            raise
        return BlobInfo(key, st.st_size, sha256, content_type, st.st_mtime)

    # ------------------------------------------------------------ reads

    def _read_meta(self, key: str) -> dict[str, Any] | None:
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def stat(self, key: str) -> BlobInfo | None:
        path = self._data_path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        meta = self._read_meta(key)
        if meta is not None and meta.get("identity") == _identity(st):
            return BlobInfo(key, st.st_size, meta["sha256"], meta["content_type"], st.st_mtime)
        # No sidecar, or one written for another version of the file: trust the file.
        try:
            sha256 = _hash_file(path)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return BlobInfo(key, st.st_size, sha256, _UNKNOWN_TYPE, st.st_mtime)

    def open(self, key: str) -> BinaryIO:
        path = self._data_path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def local_path(self, key: str) -> Path | None:
        path = self._data_path(key)
        return path if path.is_file() else None

    # ------------------------------------------------------------ deletes

    def delete(self, key: str) -> None:
        self._delete(key)

    def _delete(self, key: str) -> bool:
        data_path = self._data_path(key)
        meta_path = self._meta_path(key)
        removed = _unlink(data_path)
        _unlink(meta_path)
        _prune(data_path.parent, self._data)
        _prune(meta_path.parent, self._meta)
        return removed

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        if not prefix:
            raise InvalidKey("prefix must not be empty for delete_prefix")
        return sum(self._delete(key) for key in list(self.list(prefix)))

    # ------------------------------------------------------------ listing

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        start = f"{folder}/" if folder else ""
        return self._walk(self._data / folder if folder else self._data, start, prefix)

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if "~" not in e.name and not e.is_symlink()]
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sorting a directory as "name/" yields keys in plain lexicographic order.
        names = {e.name + ("/" if e.is_dir() else ""): e for e in entries}
        for name in sorted(names):
            key = rel + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(names[name].path), key, prefix)
            elif key.startswith(prefix):
                yield key
