"""Render: frames to files (MP4, posters, thumbnails) and probes to check them."""

from __future__ import annotations

from cinecloud.render.encode import (
    RenderedFile,
    VideoProbe,
    encode_mp4,
    even_size,
    mp4_box_order,
    probe_video,
    render_outputs,
    thumbnail_size,
    write_poster,
    write_thumbnail,
)

__all__ = [
    "RenderedFile",
    "VideoProbe",
    "encode_mp4",
    "even_size",
    "mp4_box_order",
    "probe_video",
    "render_outputs",
    "thumbnail_size",
    "write_poster",
    "write_thumbnail",
]
