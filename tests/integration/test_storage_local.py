"""LocalStore: the shared BlobStore contract plus what is particular to the disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cinecloud.config import StorageConfig
from cinecloud.storage import (
    BlobStore,
    InvalidKey,
    LocalStore,
    blob_key,
    open_store,
    validate_key,
)
from cinecloud.testing.storage_contract import BAD_KEYS, BlobStoreContract

KEY = "t/ten_1/v/video_1/video.mp4"


@pytest.mark.integration
class TestLocalStoreContract(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return LocalStore(tmp_path / "blobs")


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "blobs")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _dirs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


@pytest.mark.integration
def test_layout_and_sidecar_not_listed(local: LocalStore) -> None:
    local.put_bytes(KEY, b"video", "video/mp4")
    assert _files(local.root) == [f"data/{KEY}", f"meta/{KEY}"]
    assert list(local.list()) == [KEY]
    assert local.local_path(KEY) == local.root / "data" / KEY


@pytest.mark.integration
def test_temp_files_never_listed(local: LocalStore) -> None:
    local.put_bytes(KEY, b"video", "video/mp4")
    stray = local.root / "data" / "t/ten_1/v/video_1/.video.mp4~0123abcd.tmp"
    stray.write_bytes(b"half written")
    assert list(local.list()) == [KEY]


@pytest.mark.integration
def test_failed_write_leaves_no_files_or_dirs(local: LocalStore) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        local.put_stream(KEY, [b"12345", b"67890"], "video/mp4", max_bytes=7)
    assert _files(local.root) == []
    assert _dirs(local.root) == ["data", "meta"]


@pytest.mark.integration
def test_delete_prefix_prunes_empty_dirs(local: LocalStore) -> None:
    local.put_bytes("t/a/v/j1/video.mp4", b"1", "video/mp4")
    local.put_bytes("t/a/v/j1/hls/720p/seg.ts", b"2", "video/mp2t")
    local.put_bytes("t/a/v/j2/video.mp4", b"3", "video/mp4")
    assert local.delete_prefix("t/a/v/j1/") == 2
    assert _dirs(local.root / "data") == ["t", "t/a", "t/a/v", "t/a/v/j2"]
    assert _dirs(local.root / "meta") == ["t", "t/a", "t/a/v", "t/a/v/j2"]
    local.delete("t/a/v/j2/video.mp4")
    assert _dirs(local.root) == ["data", "meta"]


@pytest.mark.integration
def test_stat_without_sidecar_hashes_the_file(local: LocalStore) -> None:
    path = local.root / "data" / KEY
    path.parent.mkdir(parents=True)
    path.write_bytes(b"dropped in by hand")
    info = local.stat(KEY)
    assert info is not None
    assert info.sha256 == hashlib.sha256(b"dropped in by hand").hexdigest()
    assert info.content_type == "application/octet-stream"


@pytest.mark.integration
def test_stat_ignores_a_stale_sidecar(local: LocalStore) -> None:
    local.put_bytes(KEY, b"old content", "video/mp4")
    path = local.root / "data" / KEY
    tmp = path.with_name("replacement")
    tmp.write_bytes(b"new content, written around the store")
    os.replace(tmp, path)
    info = local.stat(KEY)
    assert info is not None
    assert info.sha256 == hashlib.sha256(b"new content, written around the store").hexdigest()


@pytest.mark.integration
def test_key_under_a_blob_or_over_a_prefix(local: LocalStore) -> None:
    local.put_bytes("t/a/v/j/x", b"1", "text/plain")
    with pytest.raises(InvalidKey, match="under an existing blob"):
        local.put_bytes("t/a/v/j/x/y", b"2", "text/plain")
    with pytest.raises(InvalidKey, match="prefix of existing blobs"):
        local.put_bytes("t/a/v/j", b"3", "text/plain")
    assert list(local.list()) == ["t/a/v/j/x"]


@pytest.mark.integration
def test_sidecar_names_never_collide_with_keys(local: LocalStore) -> None:
    keys = ["t/a/v/j/x", "t/a/v/j/x.json/y", "t/a/v/j/x.meta.json"]
    for key in keys:
        local.put_bytes(key, key.encode(), "text/plain")
    assert list(local.list()) == sorted(keys)
    for key in keys:
        info = local.stat(key)
        assert info is not None and info.content_type == "text/plain"
        assert local.get_bytes(key) == key.encode()


@pytest.mark.integration
def test_open_store(tmp_path: Path) -> None:
    store = open_store(StorageConfig(backend="local", root=tmp_path / "s"))
    assert isinstance(store, LocalStore)
    store.put_bytes(KEY, b"x", "text/plain")
    assert (tmp_path / "s" / "data" / KEY).read_bytes() == b"x"
    with pytest.raises(ValueError, match="'ftp'"):
        open_store(StorageConfig(backend="ftp", root=tmp_path))


# ---------------------------------------------------------------- key rules (pure)


@pytest.mark.unit
@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_validate_key_rejects(bad: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(bad)


@pytest.mark.unit
@pytest.mark.parametrize("good", ["a", "t/ten_1/v/video_1/video.mp4", ".hidden/x", "a" * 512])
def test_validate_key_accepts(good: str) -> None:
    assert validate_key(good) == good


@pytest.mark.unit
def test_blob_key() -> None:
    assert blob_key("ten_1", "video_1", "video.mp4") == KEY
    assert blob_key("ten_1", "video_1", "hls/720p/seg.ts") == "t/ten_1/v/video_1/hls/720p/seg.ts"
    for tenant, job, name in [
        ("", "j", "n"),
        ("a/b", "j", "n"),
        ("..", "j", "n"),
        ("t", "j/k", "n"),
        ("t", "j", ""),
        ("t", "j", "../x"),
        ("t", "j", "/x"),
        ("t", "j", "a b"),
    ]:
        with pytest.raises(InvalidKey):
            blob_key(tenant, job, name)
