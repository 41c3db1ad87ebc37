"""Image variants of a video: the spritesheet (seek-bar previews) and an animated preview.

The spritesheet is one JPEG grid of evenly spaced frames, read left to right and top
to bottom, each tile at most ``tile_max_side`` pixels on its longer side with the
display aspect kept. The animated preview is a looping WebP of the clip, at most
``max_side`` pixels and ``max_frames`` frames (frames dropped evenly, timing kept).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from cinecloud.render.encode import (
    _check_frames,
    _check_int,
    _check_size,
    _source_size,
    thumbnail_size,
)

__all__ = ["sprite_layout", "write_preview", "write_spritesheet"]

_JPEG_QUALITY = 85
_WEBP_QUALITY = 70


def _pick(count: int, total: int) -> list[int]:
    """``count`` frame indices spread evenly over ``total`` frames (first included)."""
    count = min(count, total)
    return [min(total - 1, (i * total) // count) for i in range(count)]


def sprite_layout(frame_count: int, max_tiles: int = 25) -> tuple[int, int, int]:
    """``(tiles, columns, rows)`` of the sheet for a clip of ``frame_count`` frames."""
    tiles = min(frame_count, max_tiles)
    columns = math.ceil(math.sqrt(tiles))
    return tiles, columns, math.ceil(tiles / columns)


def _resized(frame: np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(frame)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def write_spritesheet(
    frames: np.ndarray,
    path: Path,
    *,
    display_size: tuple[int, int] | None = None,
    tile_max_side: int = 160,
    max_tiles: int = 25,
) -> Path:
    """A JPEG grid of up to ``max_tiles`` evenly spaced frames."""
    _check_frames(frames)
    _check_int(tile_max_side, "tile_max_side", 1, 4096)
    _check_int(max_tiles, "max_tiles", 1, 400)
    base = _check_size(display_size, "display_size") if display_size else _source_size(frames)
    tile = thumbnail_size(base, tile_max_side)
    tiles, columns, rows = sprite_layout(frames.shape[0], max_tiles)
    sheet = Image.new("RGB", (tile[0] * columns, tile[1] * rows))
    for n, index in enumerate(_pick(tiles, frames.shape[0])):
        row, col = divmod(n, columns)
        sheet.paste(_resized(frames[index], tile), (col * tile[0], row * tile[1]))
    sheet.save(path, format="JPEG", quality=_JPEG_QUALITY)
    return Path(path)


def write_preview(
    frames: np.ndarray,
    path: Path,
    fps: int,
    *,
    display_size: tuple[int, int] | None = None,
    max_side: int = 256,
    max_frames: int = 48,
) -> Path:
    """A looping animated WebP of the clip, small enough for hover previews."""
    _check_frames(frames)
    _check_int(fps, "fps", 1, 240)
    _check_int(max_side, "max_side", 1, 4096)
    _check_int(max_frames, "max_frames", 1, 1000)
    base = _check_size(display_size, "display_size") if display_size else _source_size(frames)
    size = thumbnail_size(base, max_side)
    picked = _pick(max_frames, frames.shape[0])
    # Each kept frame lasts as long as the frames it stands for, so timing is kept.
    duration_ms = max(1, round(1000 * frames.shape[0] / (fps * len(picked))))
    images = [_resized(frames[i], size) for i in picked]
    images[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
        quality=_WEBP_QUALITY,
    )
    return Path(path)
