"""Render: frames to files (MP4, HLS, posters, thumbnails, sprites, previews) and probes."""

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
    to_yuv420p,
    write_poster,
    write_thumbnail,
)
from cinecloud.render.hls import (
    MediaPlaylist,
    Rendition,
    hls_ladder,
    parse_media_playlist,
    write_hls,
)
from cinecloud.render.variants import sprite_layout, write_preview, write_spritesheet

__all__ = [
    "MediaPlaylist",
    "RenderedFile",
    "Rendition",
    "VideoProbe",
    "encode_mp4",
    "even_size",
    "hls_ladder",
    "mp4_box_order",
    "parse_media_playlist",
    "probe_video",
    "render_outputs",
    "sprite_layout",
    "thumbnail_size",
    "to_yuv420p",
    "write_hls",
    "write_poster",
    "write_preview",
    "write_spritesheet",
    "write_thumbnail",
]
