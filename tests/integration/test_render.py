"""Render: real libx264 encodes, read back by decoding with PyAV."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from cinecloud.render import (
    RenderedFile,
    encode_mp4,
    mp4_box_order,
    probe_video,
    render_outputs,
    write_poster,
    write_thumbnail,
)

pytestmark = pytest.mark.integration


def gradient(t: int, h: int, w: int) -> np.ndarray:
    """Frames with a moving diagonal gradient: different in every frame."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 255 // max(w - 1, 1) + 9 * i) % 256
        out[i, ..., 1] = (y * 255 // max(h - 1, 1)) % 256
        out[i, ..., 2] = (i * 255) // max(t - 1, 1)
    return out


def flat(values: list[tuple[int, int, int]], h: int = 32, w: int = 48) -> np.ndarray:
    return np.stack([np.full((h, w, 3), v, dtype=np.uint8) for v in values])


def decode_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def assert_faststart(path: Path) -> None:
    boxes = mp4_box_order(path)
    assert boxes[0] == "ftyp"
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes


# ---------------------------------------------------------------- encode_mp4


def test_encode_random_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(17, 48, 64, 3), dtype=np.uint8)
    path = encode_mp4(frames, tmp_path / "v.mp4", 8)
    probe = probe_video(path)
    assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
    assert (probe.width, probe.height, probe.frames) == (64, 48, 17)
    assert probe.fps == pytest.approx(8.0)
    assert probe.duration == pytest.approx(17 / 8, abs=0.01)
    assert_faststart(path)


def test_frames_keep_their_order_and_colour(tmp_path: Path) -> None:
    values = [(200, 60, 30), (30, 200, 60), (60, 30, 200), (128, 128, 128), (250, 250, 250)]
    path = encode_mp4(flat(values), tmp_path / "v.mp4", 4)
    decoded = decode_rgb(path)
    assert len(decoded) == len(values)
    for frame, want in zip(decoded, values, strict=True):
        got = frame.reshape(-1, 3).mean(axis=0)
        assert np.abs(got - np.array(want)).max() < 4, (got, want)


def test_closed_gop_puts_keyframes_exactly_every_gop(tmp_path: Path) -> None:
    path = encode_mp4(gradient(20, 32, 32), tmp_path / "v.mp4", 8, gop=8)
    with av.open(str(path)) as container:
        keyframes = [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]
    assert keyframes == [0, 8, 16]
    assert_faststart(path)


def test_single_frame(tmp_path: Path) -> None:
    path = encode_mp4(gradient(1, 16, 16), tmp_path / "one.mp4", 24)
    probe = probe_video(path)
    assert (probe.frames, probe.width, probe.height) == (1, 16, 16)
    assert_faststart(path)


def test_display_size_upscales(tmp_path: Path) -> None:
    frames = gradient(9, 64, 64)
    path = encode_mp4(frames, tmp_path / "v.mp4", 16, display_size=(256, 256))
    probe = probe_video(path)
    assert (probe.width, probe.height, probe.frames) == (256, 256, 9)
    # The content is the source scaled up, not a crop or a blank frame.
    first = decode_rgb(path)[0]
    small = np.asarray(Image.fromarray(first).resize((64, 64), Image.Resampling.BOX))
    assert np.abs(small.astype(int) - frames[0].astype(int)).mean() < 6


def test_non_square_display_size(tmp_path: Path) -> None:
    path = encode_mp4(gradient(5, 64, 64), tmp_path / "v.mp4", 8, display_size=(320, 180))
    probe = probe_video(path)
    assert (probe.width, probe.height) == (320, 180)


@pytest.mark.parametrize(
    ("hw", "display", "expected"),
    [
        ((47, 63), None, (64, 48)),
        ((5, 7), None, (8, 6)),
        ((64, 64), (101, 75), (102, 76)),
        ((33, 33), (99, 99), (100, 100)),
    ],
)
def test_odd_sizes_round_up_to_even(
    tmp_path: Path,
    hw: tuple[int, int],
    display: tuple[int, int] | None,
    expected: tuple[int, int],
) -> None:
    path = encode_mp4(gradient(3, *hw), tmp_path / "v.mp4", 8, display_size=display)
    probe = probe_video(path)
    assert (probe.width, probe.height, probe.frames, probe.pix_fmt) == (*expected, 3, "yuv420p")


def test_bad_frames_message() -> None:
    frames = np.zeros((2, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError) as exc:
        encode_mp4(frames, Path("unused.mp4"), 8)
    assert str(exc.value) == "frames must be uint8 (T,H,W,3), got float32 (2, 8, 8)"


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 8, 8, 3), dtype=np.float32),
        np.zeros((2, 8, 8, 4), dtype=np.uint8),
        np.zeros((0, 8, 8, 3), dtype=np.uint8),
        np.zeros((2, 0, 8, 3), dtype=np.uint8),
        np.zeros((8, 8, 3), dtype=np.uint8),
        [[[[0, 0, 0]]]],
    ],
    ids=["float32", "rgba", "no-frames", "zero-height", "3d", "list"],
)
def test_bad_frames_rejected_everywhere(tmp_path: Path, frames: np.ndarray) -> None:
    for call in (
        lambda: encode_mp4(frames, tmp_path / "v.mp4", 8),
        lambda: write_poster(frames, tmp_path / "p.jpg"),
        lambda: write_thumbnail(frames, tmp_path / "t.jpg"),
        lambda: render_outputs(frames, tmp_path / "out", 8),
    ):
        with pytest.raises(ValueError, match=r"frames must be uint8 \(T,H,W,3\)"):
            call()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 0}, "fps"),
        ({"fps": 2.5}, "fps"),
        ({"fps": True}, "fps"),
        ({"crf": 52}, "crf"),
        ({"gop": 0}, "gop"),
        ({"display_size": (0, 64)}, "display_size"),
        ({"display_size": (64.0, 64)}, "display_size"),
        ({"display_size": (64, 64, 3)}, "display_size"),
        ({"display_size": [64, 64]}, "display_size"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"fps": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        encode_mp4(gradient(2, 8, 8), tmp_path / "v.mp4", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "v.mp4").exists()


# ---------------------------------------------------------------- images


def test_poster_is_middle_frame_at_display_size(tmp_path: Path) -> None:
    values = [(10, 10, 10), (60, 60, 60), (120, 40, 200), (200, 200, 200)]
    path = write_poster(flat(values), tmp_path / "p.jpg", display_size=(101, 75))
    with Image.open(path) as image:
        assert (image.format, image.size) == ("JPEG", (101, 75))
        mean = np.asarray(image.convert("RGB")).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - np.array(values[2])).max() < 4


def test_poster_defaults_to_source_size(tmp_path: Path) -> None:
    path = write_poster(gradient(3, 40, 70), tmp_path / "p.jpg")
    with Image.open(path) as image:
        assert image.size == (70, 40)


@pytest.mark.parametrize(
    ("hw", "kwargs", "size"),
    [
        ((360, 640), {}, (256, 144)),
        ((640, 360), {}, (144, 256)),
        ((48, 64), {}, (64, 48)),
        ((48, 64), {"max_side": 32}, (32, 24)),
        ((64, 64), {"display_size": (512, 256)}, (256, 128)),
        ((64, 64), {"display_size": (100, 50), "max_side": 256}, (100, 50)),
    ],
)
def test_thumbnail_size(
    tmp_path: Path, hw: tuple[int, int], kwargs: dict[str, object], size: tuple[int, int]
) -> None:
    path = write_thumbnail(gradient(2, *hw), tmp_path / "t.jpg", **kwargs)  # type: ignore[arg-type]
    with Image.open(path) as image:
        assert (image.format, image.size) == ("JPEG", size)


def test_thumbnail_is_first_frame(tmp_path: Path) -> None:
    path = write_thumbnail(flat([(250, 20, 20), (20, 20, 250)]), tmp_path / "t.jpg")
    with Image.open(path) as image:
        mean = np.asarray(image.convert("RGB")).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - np.array([250, 20, 20])).max() < 6


def test_thumbnail_bad_max_side(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_side"):
        write_thumbnail(gradient(1, 8, 8), tmp_path / "t.jpg", max_side=0)


# ---------------------------------------------------------------- render_outputs


def test_render_outputs(tmp_path: Path) -> None:
    out = tmp_path / "job"
    files = render_outputs(gradient(9, 64, 64), out, 8, display_size=(256, 256))
    assert [(f.name, f.content_type) for f in files] == [
        ("video.mp4", "video/mp4"),
        ("poster.jpg", "image/jpeg"),
        ("thumbnail.jpg", "image/jpeg"),
        ("spritesheet.jpg", "image/jpeg"),
        ("preview.webp", "image/webp"),
        ("hls/master.m3u8", "application/vnd.apple.mpegurl"),
        ("hls/256p/index.m3u8", "application/vnd.apple.mpegurl"),
        ("hls/256p/init.mp4", "video/mp4"),
        ("hls/256p/seg_00000.m4s", "video/mp4"),
    ]
    assert all(isinstance(f, RenderedFile) and f.path == out / f.name for f in files)
    probe = probe_video(out / "video.mp4")
    assert (probe.width, probe.height, probe.frames) == (256, 256, 9)
    assert_faststart(out / "video.mp4")
    with Image.open(out / "poster.jpg") as poster, Image.open(out / "thumbnail.jpg") as thumb:
        assert (poster.size, thumb.size) == ((256, 256), (256, 256))
    assert [f.name for f in render_outputs(gradient(9, 64, 64), out, 8, hls=False)][-1] == (
        "preview.webp"
    )


# ---------------------------------------------------------------- mp4_box_order


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_box_order_reads_large_and_open_ended_boxes(tmp_path: Path) -> None:
    large = struct.pack(">I4sQ", 1, b"free", 16 + 5) + b"12345"
    data = _box(b"ftyp", b"isom0000") + large + _box(b"moov", b"x" * 20)
    data += struct.pack(">I4s", 0, b"mdat") + b"rest of file"
    path = tmp_path / "boxes.mp4"
    path.write_bytes(data)
    assert mp4_box_order(path) == ["ftyp", "free", "moov", "mdat"]


def test_box_order_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(_box(b"ftyp", b"isom") + struct.pack(">I4s", 4000, b"moov") + b"short")
    with pytest.raises(ValueError, match="bad box size"):
        mp4_box_order(path)
    path.write_bytes(_box(b"ftyp", b"isom") + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        mp4_box_order(path)
