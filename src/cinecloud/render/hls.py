"""HLS: a ladder of H.264 renditions in fMP4 segments, and the master playlist.

Layout under ``out_dir`` (names are also the artifact names, under ``hls/``)::

    hls/master.m3u8              one EXT-X-STREAM-INF per rendition, best first
    hls/{name}/index.m3u8        the rendition's VOD playlist (EXT-X-ENDLIST)
    hls/{name}/init.mp4          its initialisation segment (EXT-X-MAP)
    hls/{name}/seg_00000.m4s     its media segments

Every rendition has a closed GOP of exactly 2 s (keyframes at 0, 2, 4 s, ...; no
scene-cut keyframes), so segments cut at keyframes line up across renditions and a
player can switch between them at any segment boundary. Segments aim at 6 s (three
GOPs; the last one is shorter), so each ``EXTINF`` is at most the 6 s target, as
RFC 8216 requires of ``EXT-X-TARGETDURATION``.

The ladder fits the source: its native size (rounded to even), plus 720p and 480p
where they are smaller than it. Nothing is upscaled.

Each rendition is its own libx264 encode (CRF 21, preset veryfast), except where
:func:`write_hls` is given an MP4 of the same frames with the same closed GOP (what
``render_outputs`` does): the rendition of the MP4's size then carries the MP4's own
H.264 packets (CRF 18, preset medium), cut into segments at its keyframes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.container import OutputContainer

from cinecloud.render.encode import (
    RenderedFile,
    _check_frames,
    _check_int,
    _check_size,
    _source_size,
    closed_gop,
    encode_frames,
    even_size,
)

__all__ = [
    "GOP_SECONDS",
    "LADDER_HEIGHTS",
    "SEGMENT_SECONDS",
    "MediaPlaylist",
    "Rendition",
    "hls_ladder",
    "parse_media_playlist",
    "write_hls",
]

GOP_SECONDS = 2
SEGMENT_SECONDS = 6
LADDER_HEIGHTS = (720, 480)
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
_CRF = 21


@dataclass(frozen=True)
class Rendition:
    name: str
    width: int
    height: int


@dataclass(frozen=True)
class MediaPlaylist:
    """What a media playlist says: its target, segments and whether it is complete."""

    target_duration: int
    map_uri: str | None
    segments: tuple[tuple[float, str], ...]
    ended: bool
    version: int


def hls_ladder(size: tuple[int, int]) -> list[Rendition]:
    """The renditions for a ``(width, height)`` source: native, then 720p and 480p below it."""
    width, height = even_size(_check_size(size, "size"))
    ladder = [Rendition(f"{height}p", width, height)]
    for target in LADDER_HEIGHTS:
        if target < height:
            scaled = even_size((max(2, round(width * target / height)), target))
            ladder.append(Rendition(f"{target}p", *scaled))
    return ladder


def _codecs(extradata: bytes | None) -> str:
    """The RFC 6381 ``avc1.PPCCLL`` string from the encoder's SPS (avcC or Annex B)."""
    if not extradata:
        return "avc1.640028"
    if extradata[0] == 1:  # avcC: version, profile, compatibility, level
        profile = extradata[1:4]
    else:  # Annex B: start code, then the SPS NAL (type 7) header and its first 3 bytes
        start = extradata.find(b"\x00\x00\x01")
        profile = extradata[start + 4 : start + 7]
    return "avc1." + profile.hex()


def _open_rendition(directory: Path) -> OutputContainer:
    """The HLS muxer writing one rendition's playlist, init segment and segments."""
    directory.mkdir(parents=True, exist_ok=True)
    options = {
        "hls_time": str(SEGMENT_SECONDS),
        "hls_segment_type": "fmp4",
        "hls_playlist_type": "vod",
        "hls_segment_filename": str(directory / "seg_%05d.m4s"),
        "hls_fmp4_init_filename": "init.mp4",
        "hls_flags": "independent_segments",
    }
    return av.open(str(directory / "index.m3u8"), "w", format="hls", options=options)


def _encode(frames: np.ndarray, directory: Path, fps: int, rendition: Rendition) -> str:
    """Encode one rendition into ``directory``; returns its CODECS string."""
    size = (rendition.width, rendition.height)
    options = closed_gop(GOP_SECONDS * fps)
    with _open_rendition(directory) as out:
        stream = encode_frames(out, frames, fps, size, crf=str(_CRF), preset="veryfast", **options)
        return _codecs(stream.codec_context.extradata)


def _video_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.width, ctx.height


def _remux(source: Path, directory: Path, fps: int) -> str:
    """Cut ``source``'s H.264 packets into one rendition in ``directory``, as they are;
    returns its CODECS string. Raises ValueError unless they have the ladder's GOP."""
    gop = GOP_SECONDS * fps
    with av.open(str(source)) as container, _open_rendition(directory) as out:
        video = container.streams.video[0]
        stream = out.add_stream_from_template(video)
        for packet in container.demux(video):
            if packet.size == 0:
                continue  # the demuxer's empty packet at the end
            if packet.pts is None or packet.time_base is None:
                raise ValueError(f"{source}: a packet without a timestamp")
            index = round(packet.pts * packet.time_base * fps)
            if packet.is_keyframe != (index % gop == 0):
                raise ValueError(f"{source}: frame {index} breaks the {gop}-frame closed GOP")
            packet.stream = stream
            out.mux(packet)
        return _codecs(video.codec_context.extradata)


def _bandwidth(directory: Path, playlist: MediaPlaylist) -> tuple[int, int]:
    """Peak and average bits per second over the segments (RFC 8216 4.3.4.2)."""
    rates, total_bits, total_s = [], 0, 0.0
    for duration, uri in playlist.segments:
        bits = (directory / uri).stat().st_size * 8
        rates.append(bits / max(duration, 1e-3))
        total_bits, total_s = total_bits + bits, total_s + duration
    return math.ceil(max(rates)), math.ceil(total_bits / max(total_s, 1e-3))


def _master(entries: list[tuple[Rendition, str, tuple[int, int]]], fps: int) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rendition, codecs, (peak, average) in entries:
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
            f'CODECS="{codecs}",RESOLUTION={rendition.width}x{rendition.height},'
            f"FRAME-RATE={fps:.3f}"
        )
        lines.append(f"{rendition.name}/index.m3u8")
    return "\n".join(lines) + "\n"


def write_hls(
    frames: np.ndarray,
    out_dir: Path,
    fps: int,
    *,
    display_size: tuple[int, int] | None = None,
    shared: Path | None = None,
) -> list[RenderedFile]:
    """Write the ladder and master playlist under ``out_dir/hls``; the files, master first.

    ``shared`` is an MP4 of the same ``frames`` and ``fps`` with the ladder's closed
    GOP (``encode_mp4(..., gop=GOP_SECONDS * fps)``): the rendition of its size takes
    its packets as they are instead of encoding the frames again. The other
    renditions are encoded from ``frames``.
    """
    _check_frames(frames)
    _check_int(fps, "fps", 1, 240)
    size = _check_size(display_size, "display_size") if display_size else _source_size(frames)
    root = Path(out_dir) / "hls"
    shared_size = _video_size(shared) if shared is not None else None
    entries = []
    files: list[RenderedFile] = []
    for rendition in hls_ladder(size):
        directory = root / rendition.name
        if shared is not None and (rendition.width, rendition.height) == shared_size:
            codecs = _remux(shared, directory, fps)
        else:
            codecs = _encode(frames, directory, fps, rendition)
        playlist = parse_media_playlist((directory / "index.m3u8").read_text())
        entries.append((rendition, codecs, _bandwidth(directory, playlist)))
        names = ["index.m3u8", playlist.map_uri or "init.mp4", *(u for _, u in playlist.segments)]
        for name in names:
            ctype = PLAYLIST_TYPE if name.endswith(".m3u8") else "video/mp4"
            files.append(RenderedFile(f"hls/{rendition.name}/{name}", directory / name, ctype))
    master = root / "master.m3u8"
    master.write_text(_master(entries, fps))
    return [RenderedFile("hls/master.m3u8", master, PLAYLIST_TYPE), *files]


_EXTINF = re.compile(r"#EXTINF:([0-9.]+),.*")
_TAG_INT = re.compile(r"#EXT-X-(TARGETDURATION|VERSION):([0-9]+)")
_MAP = re.compile(r'#EXT-X-MAP:URI="([^"]+)".*')


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse a media playlist; raises ValueError where it breaks RFC 8216's basic rules."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("playlist does not start with #EXTM3U")
    ints: dict[str, int] = {}
    segments: list[tuple[float, str]] = []
    map_uri, pending = None, None
    for line in lines[1:]:
        if (m := _TAG_INT.fullmatch(line)) is not None:
            ints[m.group(1)] = int(m.group(2))
        elif (m := _MAP.fullmatch(line)) is not None:
            map_uri = m.group(1)
        elif (m := _EXTINF.fullmatch(line)) is not None:
            pending = float(m.group(1))
        elif not line.startswith("#"):
            if pending is None:
                raise ValueError(f"segment without #EXTINF: {line}")
            segments.append((pending, line))
            pending = None
    if "TARGETDURATION" not in ints:
        raise ValueError("no #EXT-X-TARGETDURATION")
    target = ints["TARGETDURATION"]
    for duration, uri in segments:
        # RFC 8216 4.3.3.1: each EXTINF, rounded to the nearest integer, <= the target.
        if round(duration) > target:
            raise ValueError(f"{uri} lasts {duration}s, over the target of {target}s")
    ended = "#EXT-X-ENDLIST" in lines
    return MediaPlaylist(target, map_uri, tuple(segments), ended, ints.get("VERSION", 1))
