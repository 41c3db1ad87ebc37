"""HLS ladder, spritesheet and animated preview, read back with PyAV and Pillow."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from cinecloud.render import (
    encode_mp4,
    hls_ladder,
    parse_media_playlist,
    render_outputs,
    sprite_layout,
    write_hls,
    write_preview,
    write_spritesheet,
)
from cinecloud.render.hls import GOP_SECONDS, SEGMENT_SECONDS

pytestmark = pytest.mark.integration


def moving(t: int, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 3 + 5 * i) % 256
        out[i, ..., 1] = (y * 3) % 256
        out[i, ..., 2] = (i * 7) % 256
    return out


def _master_entries(text: str) -> list[tuple[dict[str, str], str]]:
    lines = [line for line in text.splitlines() if line]
    assert lines[0] == "#EXTM3U" and "#EXT-X-INDEPENDENT-SEGMENTS" in lines
    entries = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = dict(
                part.split("=", 1) for part in line.split(":", 1)[1].split(",") if "=" in part
            )
            entries.append((attrs, lines[i + 1]))
    return entries


@pytest.fixture(scope="module")
def ladder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hls")
    # 13.5 s at 8 fps, shown at 1280x720: a 720p and a 480p rendition.
    write_hls(moving(108, 36, 64), out, 8, display_size=(1280, 720))
    return out / "hls"


def test_ladder_fits_the_source() -> None:
    assert [(r.name, r.width, r.height) for r in hls_ladder((1920, 1080))] == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
    ]
    assert [r.name for r in hls_ladder((832, 480))] == ["480p"]
    assert [r.name for r in hls_ladder((64, 64))] == ["64p"]
    native = hls_ladder((1281, 721))[0]
    assert (native.width, native.height) == (1282, 722)


def test_master_playlist(ladder_dir: Path) -> None:
    entries = _master_entries((ladder_dir / "master.m3u8").read_text())
    assert [(a["RESOLUTION"], uri) for a, uri in entries] == [
        ("1280x720", "720p/index.m3u8"),
        ("854x480", "480p/index.m3u8"),
    ]
    for attrs, _ in entries:
        assert attrs["CODECS"].startswith('"avc1.')
        assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"]) > 0
    assert int(entries[0][0]["BANDWIDTH"]) > int(entries[1][0]["BANDWIDTH"])


@pytest.mark.parametrize("name", ["720p", "480p"])
def test_media_playlists_follow_rfc_8216(ladder_dir: Path, name: str) -> None:
    playlist = parse_media_playlist((ladder_dir / name / "index.m3u8").read_text())
    assert playlist.ended  # #EXT-X-ENDLIST: a complete VOD playlist
    assert playlist.target_duration <= SEGMENT_SECONDS
    assert playlist.map_uri == "init.mp4" and (ladder_dir / name / "init.mp4").is_file()
    durations = [d for d, _ in playlist.segments]
    assert all(d <= playlist.target_duration for d in durations)
    assert durations[:-1] == [float(SEGMENT_SECONDS)] * (len(durations) - 1)
    assert sum(durations) == pytest.approx(108 / 8)
    assert playlist.version >= 6  # EXT-X-MAP on an fMP4 playlist needs 6 or later


@pytest.mark.parametrize(("name", "size"), [("720p", (1280, 720)), ("480p", (854, 480))])
def test_pyav_plays_the_playlist(ladder_dir: Path, name: str, size: tuple[int, int]) -> None:
    with av.open(str(ladder_dir / name / "index.m3u8")) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert len(frames) == 108
    assert (frames[0].width, frames[0].height) == size
    keyframes = [i for i, f in enumerate(frames) if f.key_frame]
    assert keyframes == list(range(0, 108, GOP_SECONDS * 8))  # a 2 s GOP, no extra cuts


def decode(path: Path) -> tuple[np.ndarray, list[int]]:
    """Every frame of ``path`` as RGB, and the indices of its keyframes."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    keyframes = [i for i, f in enumerate(frames) if f.key_frame]
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), keyframes


def test_the_rendition_of_the_mp4s_size_is_the_mp4s_own_encode(tmp_path: Path) -> None:
    # 3 s at 8 fps: two GOPs. A second encode of the rung (its own CRF and preset)
    # would decode to other pixels; the MP4's packets cut into segments decode to its own.
    render_outputs(moving(24, 64, 64), tmp_path, 8, display_size=(256, 256))
    mp4, mp4_keys = decode(tmp_path / "video.mp4")
    rung, rung_keys = decode(tmp_path / "hls" / "256p" / "index.m3u8")
    assert mp4.shape == (24, 256, 256, 3)
    assert np.array_equal(rung, mp4)
    assert mp4_keys == rung_keys == [0, GOP_SECONDS * 8]
    entries = _master_entries((tmp_path / "hls" / "master.m3u8").read_text())
    assert [(a["RESOLUTION"], uri) for a, uri in entries] == [("256x256", "256p/index.m3u8")]
    assert entries[0][0]["CODECS"].startswith('"avc1.')


def test_a_bigger_source_still_encodes_its_smaller_rungs(tmp_path: Path) -> None:
    render_outputs(moving(24, 36, 64), tmp_path, 8, display_size=(960, 540))
    mp4, _ = decode(tmp_path / "video.mp4")
    native, _ = decode(tmp_path / "hls" / "540p" / "index.m3u8")
    smaller, keys = decode(tmp_path / "hls" / "480p" / "index.m3u8")
    assert np.array_equal(native, mp4)
    assert smaller.shape == (24, 480, 854, 3) and keys == [0, GOP_SECONDS * 8]
    entries = _master_entries((tmp_path / "hls" / "master.m3u8").read_text())
    assert [a["RESOLUTION"] for a, _ in entries] == ["960x540", "854x480"]


def test_an_mp4_without_the_ladders_gop_is_not_shared(tmp_path: Path) -> None:
    frames = moving(24, 64, 64)
    video = encode_mp4(frames, tmp_path / "video.mp4", 8)  # x264's own keyframes: one
    with pytest.raises(ValueError, match="closed GOP"):
        write_hls(frames, tmp_path, 8, shared=video)


def test_playlist_checks_catch_breaches() -> None:
    good = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.0,\na.m4s\n#EXT-X-ENDLIST\n"
    assert parse_media_playlist(good).ended
    with pytest.raises(ValueError, match="over the target"):
        parse_media_playlist(good.replace("6.0,", "6.6,"))
    with pytest.raises(ValueError, match="TARGETDURATION"):
        parse_media_playlist("#EXTM3U\n#EXTINF:1.0,\na.m4s\n")
    with pytest.raises(ValueError, match="EXTINF"):
        parse_media_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:6\na.m4s\n")
    assert not parse_media_playlist(good.replace("#EXT-X-ENDLIST\n", "")).ended


def test_spritesheet(tmp_path: Path) -> None:
    frames = np.stack([np.full((36, 64, 3), 8 * i, np.uint8) for i in range(30)])
    path = write_spritesheet(frames, tmp_path / "s.jpg", display_size=(320, 180))
    tiles, columns, rows = sprite_layout(30)
    assert (tiles, columns, rows) == (25, 5, 5)
    with Image.open(path) as sheet:
        assert sheet.size == (160 * 5, 90 * 5)
        first = np.asarray(sheet.crop((0, 0, 160, 90)))
        last = np.asarray(sheet.crop((4 * 160, 4 * 90, 5 * 160, 5 * 90)))
    assert abs(float(first.mean()) - 0) < 3
    assert abs(float(last.mean()) - 8 * ((24 * 30) // 25)) < 3  # evenly spaced frames


def test_animated_preview(tmp_path: Path) -> None:
    frames = moving(96, 36, 64)
    path = write_preview(frames, tmp_path / "p.webp", 16, display_size=(1280, 720))
    with Image.open(path) as image:
        assert image.format == "WEBP" and getattr(image, "is_animated", False)
        assert image.n_frames == 48 and image.size == (256, 144)
        image.seek(1)
        image.load()
        assert image.info["duration"] == 125  # 96 frames at 16 fps in 48: 6 s kept
