"""Which files pre-warming fetches through the edge, in which order (pure)."""

from __future__ import annotations

from cinecloud.delivery.prewarm import prewarm_plan

NAMES = [
    "video.mp4",
    "hls/master.m3u8",
    "hls/480p/index.m3u8",
    "hls/480p/init.mp4",
    "hls/480p/seg_00000.m4s",
    "hls/480p/seg_00001.m4s",
    "hls/720p/init.mp4",
    "hls/720p/seg_00000.m4s",
    "spritesheet.jpg",
    "poster.jpg",
    "thumbnail.jpg",
    "preview.webp",
]


def test_small_images_then_first_segments_then_the_video() -> None:
    assert prewarm_plan(NAMES) == [
        "thumbnail.jpg",
        "poster.jpg",
        "preview.webp",
        "spritesheet.jpg",
        "hls/480p/init.mp4",
        "hls/480p/seg_00000.m4s",
        "hls/720p/init.mp4",
        "hls/720p/seg_00000.m4s",
        "video.mp4",
    ]


def test_playlists_and_later_segments_are_left_out() -> None:
    plan = prewarm_plan(NAMES, include_video=False)
    assert "video.mp4" not in plan
    assert not [n for n in plan if n.endswith(".m3u8") or n.endswith("00001.m4s")]
    assert prewarm_plan([]) == []
    assert prewarm_plan(["video.mp4", "video.mp4"]) == ["video.mp4"]
