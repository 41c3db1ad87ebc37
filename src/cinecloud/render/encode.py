"""Frames to files: the H.264 MP4, the poster and the thumbnail (and, through
:func:`render_outputs`, the spritesheet, animated preview and HLS ladder).

``frames`` are uint8 RGB arrays shaped ``(T, H, W, 3)``. Sizes are
``(width, height)`` pairs, as in Pillow.

Output size: the video is ``display_size`` (or the source size) rounded up to
even numbers, because yuv420p stores chroma at half resolution and H.264
encoders need even dimensions. That is the renderer's choice of output size for
the codec; the requested display size is unchanged everywhere else (the poster
is exactly ``display_size``). Frames are scaled to the output size with
Lanczos, in the same swscale call that converts RGB to BT.709 YUV.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.container import OutputContainer
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter
from av.video.stream import VideoStream
from PIL import Image

__all__ = [
    "RenderedFile",
    "VideoProbe",
    "closed_gop",
    "encode_frames",
    "encode_mp4",
    "encoder_options",
    "even_size",
    "mp4_box_order",
    "probe_video",
    "render_outputs",
    "set_encoder_threads",
    "thumbnail_size",
    "to_yuv420p",
    "write_poster",
    "write_thumbnail",
]

#: Threads each H.264 encoder may use; 0: x264's own choice (about 1.5 per CPU). A worker
#: rendering several jobs side by side shares the CPUs among its render processes, or
#: each encoder would start threads for every CPU and they would crowd one another.
_ENCODER_THREADS = 0


def set_encoder_threads(threads: int) -> None:
    """Cap every H.264 encoder this process starts at ``threads`` (0: no cap)."""
    global _ENCODER_THREADS
    _ENCODER_THREADS = max(0, threads)


def encoder_options(**options: str) -> dict[str, Any]:
    """``options`` for a libx264 stream, with this process's thread cap."""
    if _ENCODER_THREADS:
        options["threads"] = str(_ENCODER_THREADS)
    return options


def closed_gop(gop: int) -> dict[str, str]:
    """libx264 options for a closed GOP of exactly ``gop`` frames: a keyframe at frame
    0, ``gop``, ``2 * gop``, ... and nowhere else (no scene cuts), no reference across
    a keyframe. Cut at its keyframes, such a stream makes independent segments."""
    return {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0"}


# ITU-T H.273 code points for BT.709 primaries, transfer and matrix; range 1 = limited (tv).
_BT709 = 1
_LIMITED_RANGE = 1
_JPEG_QUALITY = 90
_MAX_SIDE = 16384
_MAX_GOP = 100_000


@dataclass(frozen=True)
class RenderedFile:
    """One file the renderer wrote, with the content type to store it under."""

    name: str
    path: Path
    content_type: str


@dataclass(frozen=True)
class VideoProbe:
    """What a decoder sees in a video file."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    fps: float
    duration: float


# ---------------------------------------------------------------- validation


def _check_frames(frames: np.ndarray) -> None:
    ok = (
        isinstance(frames, np.ndarray)
        and frames.dtype == np.uint8
        and frames.ndim == 4
        and frames.shape[3] == 3
        and min(frames.shape) > 0
    )
    if not ok:
        dtype = getattr(frames, "dtype", type(frames).__name__)
        shape = getattr(frames, "shape", "?")
        raise ValueError(f"frames must be uint8 (T,H,W,3), got {dtype} {shape}")


def _check_size(size: tuple[int, int], what: str) -> tuple[int, int]:
    ok = (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        and all(0 < v <= _MAX_SIDE for v in size)
    )
    if not ok:
        raise ValueError(f"{what} must be (width, height) ints in 1..{_MAX_SIDE}, got {size!r}")
    return size


def _check_int(value: int, what: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an int in {low}..{high}, got {value!r}")


def _source_size(frames: np.ndarray) -> tuple[int, int]:
    return int(frames.shape[2]), int(frames.shape[1])


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` with each side rounded up to an even number (what yuv420p needs)."""
    return size[0] + size[0] % 2, size[1] + size[1] % 2


# ---------------------------------------------------------------- video


def to_yuv420p(
    reformatter: VideoReformatter, frame: np.ndarray, size: tuple[int, int]
) -> av.VideoFrame:
    """One RGB frame scaled (Lanczos) to ``size`` as BT.709 limited-range yuv420p."""
    rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return reformatter.reformat(
        rgb,
        size[0],
        size[1],
        "yuv420p",
        src_colorspace=Colorspace.ITU709,
        dst_colorspace=Colorspace.ITU709,
        interpolation=Interpolation.LANCZOS,
        src_color_range=ColorRange.JPEG,
        dst_color_range=ColorRange.MPEG,
    )


def encode_frames(
    out: OutputContainer, frames: np.ndarray, fps: int, size: tuple[int, int], **options: str
) -> VideoStream:
    """Encode ``frames`` at ``size`` (even sides) into a new libx264 stream of ``out``.

    The stream is BT.709 limited-range yuv420p at ``fps``, one frame per tick;
    ``options`` are libx264's (with this process's thread cap). Returns the stream,
    flushed: every packet is muxed.
    """
    time_base = Fraction(1, fps)
    reformatter = VideoReformatter()
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = time_base
    stream.options = encoder_options(**options)
    ctx = stream.codec_context
    ctx.colorspace = ctx.color_primaries = ctx.color_trc = _BT709
    ctx.color_range = _LIMITED_RANGE
    for index in range(frames.shape[0]):
        yuv = to_yuv420p(reformatter, frames[index], size)
        yuv.pts, yuv.time_base = index, time_base
        out.mux(stream.encode(yuv))
    out.mux(stream.encode(None))
    return stream


def encode_mp4(
    frames: np.ndarray,
    path: Path,
    fps: int,
    *,
    display_size: tuple[int, int] | None = None,
    crf: int = 18,
    preset: str = "medium",
    gop: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` as H.264 yuv420p in an MP4 with ``moov`` before ``mdat``.

    The output has exactly ``T`` frames at ``fps``; its size is ``display_size``
    (or the source size) rounded up to even. With ``gop`` the stream has a closed GOP
    of that many frames (:func:`closed_gop`), so its packets can also be cut into HLS
    segments; without it, x264's own keyframe choice. ``metadata`` entries are
    written as ISO-BMFF ``keys``/``ilst`` tags under their own names.
    """
    _check_frames(frames)
    _check_int(fps, "fps", 1, 240)
    _check_int(crf, "crf", 0, 51)
    options = {"crf": str(crf), "preset": preset}
    if gop is not None:
        _check_int(gop, "gop", 1, _MAX_GOP)
        options |= closed_gop(gop)
    target = _check_size(display_size, "display_size") if display_size else _source_size(frames)
    flags = "+faststart+use_metadata_tags" if metadata else "+faststart"
    with av.open(str(path), "w", format="mp4", container_options={"movflags": flags}) as out:
        out.metadata.update(metadata or {})
        encode_frames(out, frames, fps, even_size(target), **options)
    return Path(path)


def probe_video(path: Path) -> VideoProbe:
    """Decode every frame of the first video stream and describe it."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        ctx = stream.codec_context
        return VideoProbe(
            codec=ctx.name,
            pix_fmt=str(ctx.pix_fmt),
            width=ctx.width,
            height=ctx.height,
            frames=count,
            fps=fps,
            duration=duration,
        )


def mp4_box_order(path: Path) -> list[str]:
    """The top-level ISO-BMFF box types of ``path``, in file order."""
    boxes: list[str] = []
    with Path(path).open("rb") as fh:
        end = fh.seek(0, 2)
        offset = 0
        while offset < end:
            fh.seek(offset)
            header = fh.read(8)
            if len(header) < 8:
                raise ValueError(f"truncated box header at offset {offset} in {path}")
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                (size,) = struct.unpack(">Q", fh.read(8))
            elif size == 0:
                size = end - offset
            if size < 8 or offset + size > end:
                raise ValueError(f"bad box size {size} at offset {offset} in {path}")
            boxes.append(kind.decode("latin-1"))
            offset += size
    return boxes


# ---------------------------------------------------------------- images


def write_poster(
    frames: np.ndarray, path: Path, *, display_size: tuple[int, int] | None = None
) -> Path:
    """A JPEG of the middle frame at exactly ``display_size`` (default: source size)."""
    _check_frames(frames)
    size = _check_size(display_size, "display_size") if display_size else _source_size(frames)
    image = Image.fromarray(frames[frames.shape[0] // 2])
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    image.save(path, format="JPEG", quality=_JPEG_QUALITY)
    return Path(path)


def thumbnail_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` shrunk to fit ``max_side`` with its aspect kept; never enlarged."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def write_thumbnail(
    frames: np.ndarray,
    path: Path,
    *,
    max_side: int = 256,
    display_size: tuple[int, int] | None = None,
) -> Path:
    """A JPEG of the first frame, its longest side at most ``max_side``.

    With ``display_size`` the thumbnail keeps the display aspect; it is never
    larger than the display size (or the source size without one).
    """
    _check_frames(frames)
    _check_int(max_side, "max_side", 1, _MAX_SIDE)
    base = _check_size(display_size, "display_size") if display_size else _source_size(frames)
    size = thumbnail_size(base, max_side)
    image = Image.fromarray(frames[0])
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    image.save(path, format="JPEG", quality=_JPEG_QUALITY)
    return Path(path)


def render_outputs(
    frames: np.ndarray,
    out_dir: Path,
    fps: int,
    *,
    display_size: tuple[int, int] | None = None,
    hls: bool = True,
    metadata: dict[str, str] | None = None,
) -> list[RenderedFile]:
    """Write ``video.mp4``, ``poster.jpg``, ``thumbnail.jpg``, ``spritesheet.jpg``,
    ``preview.webp`` and (with ``hls``) the HLS ladder under ``hls/`` into ``out_dir``.

    HLS is on by default rather than opt-in per request: the render runs in its own
    process beside the engine (the worker denoises the next job meanwhile), and it
    costs little. With HLS the MP4 is encoded with the ladder's closed GOP, and the
    rendition of the MP4's size (the native one, top of the ladder) is a copy of the
    MP4's H.264 packets cut into segments, not a second encode: for a source of 480p
    or less (the default model's 256x256, for one) the ladder costs no encode at all.
    Only the smaller rungs of a bigger source (720p, 480p) are encoded again, one
    each. ``hls=False`` leaves the ladder out (and the MP4 keeps x264's own keyframe
    choice). ``metadata`` goes into the MP4 (see :func:`encode_mp4`).
    """
    from cinecloud.render.hls import GOP_SECONDS, write_hls
    from cinecloud.render.variants import write_preview, write_spritesheet

    _check_frames(frames)
    _check_int(fps, "fps", 1, 240)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = display_size
    gop = GOP_SECONDS * fps if hls else None
    video = encode_mp4(
        frames, out_dir / "video.mp4", fps, display_size=size, gop=gop, metadata=metadata
    )
    poster = write_poster(frames, out_dir / "poster.jpg", display_size=size)
    thumb = write_thumbnail(frames, out_dir / "thumbnail.jpg", display_size=size)
    sprites = write_spritesheet(frames, out_dir / "spritesheet.jpg", display_size=size)
    preview = write_preview(frames, out_dir / "preview.webp", fps, display_size=size)
    files = [
        RenderedFile("video.mp4", video, "video/mp4"),
        RenderedFile("poster.jpg", poster, "image/jpeg"),
        RenderedFile("thumbnail.jpg", thumb, "image/jpeg"),
        RenderedFile("spritesheet.jpg", sprites, "image/jpeg"),
        RenderedFile("preview.webp", preview, "image/webp"),
    ]
    if not hls:
        return files
    return files + write_hls(frames, out_dir, fps, display_size=size, shared=video)
