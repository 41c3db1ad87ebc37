"""The behaviour every BlobStore must have, as a reusable pytest suite.

Subclass :class:`BlobStoreContract` in a test module and override the ``store``
fixture to return a fresh, empty store::

    class TestLocalStore(BlobStoreContract):
        @pytest.fixture
        def store(self, tmp_path: Path) -> BlobStore:
            return LocalStore(tmp_path / "blobs")

The class name does not start with ``Test``, so pytest collects only subclasses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cinecloud.storage.base import BlobInfo, BlobNotFound, BlobStore, InvalidKey, blob_key

__all__ = ["BAD_KEYS", "BlobStoreContract"]

BAD_KEYS: tuple[str, ...] = (
    "",
    "/t/a/v/b/c",
    "t/../x",
    "..",
    "t/a\\b",
    "t/a\x00b",
    "t/a b",
    "t/a?b",
    "t/é",
    "t//b",
    "t/./b",
    "t/b/",
    "x" * 513,
)

KEY = "t/ten_1/v/video_1/video.mp4"
PAYLOAD = bytes(range(256)) * 64 + b"tail"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


class BlobStoreContract:
    """Tests that hold for every BlobStore implementation."""

    @pytest.fixture
    def store(self) -> BlobStore:
        raise NotImplementedError("override the store fixture with a fresh, empty store")

    # ------------------------------------------------------------ put and read

    def test_put_bytes_returns_info(self, store: BlobStore) -> None:
        info = store.put_bytes(KEY, PAYLOAD, "video/mp4")
        assert isinstance(info, BlobInfo)
        assert (info.key, info.size, info.sha256, info.content_type) == (
            KEY,
            len(PAYLOAD),
            _sha(PAYLOAD),
            "video/mp4",
        )
        assert info.mtime > 0

    def test_stat_matches_put(self, store: BlobStore) -> None:
        put = store.put_bytes(KEY, PAYLOAD, "video/mp4")
        got = store.stat(KEY)
        assert got is not None
        assert (got.key, got.size, got.sha256, got.content_type) == (
            put.key,
            put.size,
            put.sha256,
            put.content_type,
        )
        assert got.mtime == pytest.approx(put.mtime, abs=1.0)

    def test_get_bytes_and_open_round_trip(self, store: BlobStore) -> None:
        store.put_bytes(KEY, PAYLOAD, "application/octet-stream")
        assert store.get_bytes(KEY) == PAYLOAD
        with store.open(KEY) as fh:
            assert fh.read(10) == PAYLOAD[:10]
            assert fh.read() == PAYLOAD[10:]

    def test_empty_blob(self, store: BlobStore) -> None:
        info = store.put_bytes(KEY, b"", "text/plain")
        assert (info.size, info.sha256) == (0, _sha(b""))
        assert store.get_bytes(KEY) == b""

    def test_put_file(self, store: BlobStore, tmp_path: Path) -> None:
        src = tmp_path / "src.bin"
        src.write_bytes(PAYLOAD * 50)
        info = store.put_file(KEY, src, "video/mp4")
        assert (info.size, info.sha256) == (len(PAYLOAD) * 50, _sha(PAYLOAD * 50))
        assert store.get_bytes(KEY) == PAYLOAD * 50

    def test_put_file_missing_source(self, store: BlobStore, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            store.put_file(KEY, tmp_path / "nope.bin", "video/mp4")
        assert store.stat(KEY) is None

    def test_put_stream_many_chunks(self, store: BlobStore) -> None:
        chunks = [b"", *_chunks(PAYLOAD, 1000), b""]
        info = store.put_stream(KEY, iter(chunks), "video/mp4")
        assert (info.size, info.sha256) == (len(PAYLOAD), _sha(PAYLOAD))
        assert store.get_bytes(KEY) == PAYLOAD

    def test_put_stream_exactly_max_bytes(self, store: BlobStore) -> None:
        info = store.put_stream(KEY, _chunks(PAYLOAD, 999), "video/mp4", max_bytes=len(PAYLOAD))
        assert info.size == len(PAYLOAD)

    def test_put_stream_over_max_bytes_leaves_nothing(self, store: BlobStore) -> None:
        with pytest.raises(ValueError, match="max_bytes"):
            store.put_stream(KEY, _chunks(PAYLOAD, 999), "video/mp4", max_bytes=len(PAYLOAD) - 1)
        assert store.stat(KEY) is None
        assert list(store.list()) == []

    def test_put_stream_over_max_bytes_keeps_old_blob(self, store: BlobStore) -> None:
        store.put_bytes(KEY, b"old", "text/plain")
        with pytest.raises(ValueError, match="max_bytes"):
            store.put_stream(KEY, [b"new", b"-and-more"], "video/mp4", max_bytes=5)
        info = store.stat(KEY)
        assert info is not None and info.content_type == "text/plain"
        assert store.get_bytes(KEY) == b"old"

    def test_put_stream_failing_source_leaves_nothing(self, store: BlobStore) -> None:
        def broken() -> Iterator[bytes]:
            yield b"partial"
            raise ConnectionError("client went away")

        with pytest.raises(ConnectionError):
            store.put_stream(KEY, broken(), "video/mp4")
        assert store.stat(KEY) is None
        assert list(store.list()) == []

    def test_overwrite_replaces_content_and_type(self, store: BlobStore) -> None:
        store.put_bytes(KEY, b"first version", "text/plain")
        info = store.put_bytes(KEY, PAYLOAD, "video/mp4")
        assert info.sha256 == _sha(PAYLOAD)
        got = store.stat(KEY)
        assert got is not None
        assert (got.size, got.sha256, got.content_type) == (
            len(PAYLOAD),
            _sha(PAYLOAD),
            "video/mp4",
        )
        assert store.get_bytes(KEY) == PAYLOAD
        assert list(store.list()) == [KEY]

    def test_bad_content_type(self, store: BlobStore) -> None:
        for bad in ("", "video", "video/mp4\r\nX-Evil: 1"):
            with pytest.raises(ValueError, match="content_type"):
                store.put_bytes(KEY, b"x", bad)
        assert store.stat(KEY) is None

    def test_local_path_is_none_or_the_bytes(self, store: BlobStore) -> None:
        store.put_bytes(KEY, PAYLOAD, "video/mp4")
        path = store.local_path(KEY)
        assert path is None or path.read_bytes() == PAYLOAD

    # ------------------------------------------------------------ missing keys

    def test_missing_key(self, store: BlobStore) -> None:
        missing = "t/ten_1/v/video_1/missing.mp4"
        assert store.stat(missing) is None
        with pytest.raises(BlobNotFound, match=r"missing\.mp4") as exc:
            store.open(missing)
        assert isinstance(exc.value, KeyError)
        with pytest.raises(BlobNotFound):
            store.get_bytes(missing)

    def test_prefix_of_a_key_is_not_a_blob(self, store: BlobStore) -> None:
        store.put_bytes(KEY, b"x", "text/plain")
        assert store.stat("t/ten_1/v/video_1") is None
        with pytest.raises(BlobNotFound):
            store.get_bytes("t/ten_1/v")

    # ------------------------------------------------------------ delete

    def test_delete_is_idempotent(self, store: BlobStore) -> None:
        store.put_bytes(KEY, b"x", "text/plain")
        store.delete(KEY)
        assert store.stat(KEY) is None
        with pytest.raises(BlobNotFound):
            store.get_bytes(KEY)
        store.delete(KEY)
        store.delete("t/never/v/was/here")

    def test_delete_prefix(self, store: BlobStore) -> None:
        keep = ["t/ten_1/v/video_2/video.mp4", "t/ten_2/v/video_1/video.mp4"]
        gone = [blob_key("ten_1", "video_1", n) for n in ("video.mp4", "poster.jpg", "hls/a.ts")]
        for key in keep + gone:
            store.put_bytes(key, key.encode(), "application/octet-stream")
        assert store.delete_prefix("t/ten_1/v/video_1/") == 3
        assert sorted(store.list()) == sorted(keep)
        assert store.delete_prefix("t/ten_1/v/video_1/") == 0
        assert store.get_bytes(keep[0]) == keep[0].encode()

    def test_delete_prefix_rejects_empty(self, store: BlobStore) -> None:
        store.put_bytes(KEY, b"x", "text/plain")
        with pytest.raises(InvalidKey):
            store.delete_prefix("")
        assert store.stat(KEY) is not None

    # ------------------------------------------------------------ list

    def test_list_sorted_and_filtered(self, store: BlobStore) -> None:
        keys = [
            "t/a/v/j/z.bin",
            "t/a/v/j/a.bin",
            "t/a/v/j/sub/x.bin",
            "t/a/v/j-2/x.bin",
            "t/ab/v/j/x.bin",
            "t/b/v/j/x.bin",
        ]
        for key in keys:
            store.put_bytes(key, b"x", "application/octet-stream")
        assert list(store.list()) == sorted(keys)
        assert list(store.list("t/a/")) == sorted(k for k in keys if k.startswith("t/a/"))
        assert list(store.list("t/a")) == sorted(k for k in keys if k.startswith("t/a"))
        assert list(store.list("t/a/v/j/")) == [
            "t/a/v/j/a.bin",
            "t/a/v/j/sub/x.bin",
            "t/a/v/j/z.bin",
        ]
        assert list(store.list("t/a/v/j/a.bin")) == ["t/a/v/j/a.bin"]
        assert list(store.list("t/zzz")) == []

    def test_list_empty_store(self, store: BlobStore) -> None:
        assert list(store.list()) == []

    # ------------------------------------------------------------ keys

    def test_keys_with_dots_dashes_underscores(self, store: BlobStore) -> None:
        key = "t/Ten-1_x/v/job.2/hls/720p/seg_00001.ts"
        store.put_bytes(key, b"seg", "video/mp2t")
        assert store.get_bytes(key) == b"seg"
        assert list(store.list()) == [key]

    @pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
    def test_invalid_keys_rejected(self, store: BlobStore, bad: str) -> None:
        with pytest.raises(InvalidKey):
            store.put_bytes(bad, b"x", "text/plain")
        with pytest.raises(InvalidKey):
            store.stat(bad)
        with pytest.raises(InvalidKey):
            store.open(bad)
        with pytest.raises(InvalidKey):
            store.delete(bad)
        with pytest.raises(InvalidKey):
            store.local_path(bad)
        assert list(store.list()) == []

    @pytest.mark.parametrize("bad", ["/t", "t/../", "t\\x", "t/a b", "t//x"], ids=repr)
    def test_invalid_prefixes_rejected(self, store: BlobStore, bad: str) -> None:
        with pytest.raises(InvalidKey):
            list(store.list(bad))
        with pytest.raises(InvalidKey):
            store.delete_prefix(bad)
