"""Signing the URIs inside HLS playlists (pure)."""

from __future__ import annotations

from cinecloud.delivery import sign
from cinecloud.delivery.playlists import sign_playlist

SECRET = "playlist-secret"
URI = "/cdn/t/a/v/j/hls/720p/index.m3u8"


def test_signs_segments_and_map_for_the_same_expiry() -> None:
    text = '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:6.0,\nseg_00000.m4s\n#EXT-X-ENDLIST\n'
    out = sign_playlist(text, URI, expires=123, secret=SECRET).splitlines()
    init_sig = sign("/cdn/t/a/v/j/hls/720p/init.mp4", 123, SECRET)
    seg_sig = sign("/cdn/t/a/v/j/hls/720p/seg_00000.m4s", 123, SECRET)
    assert out[1] == f'#EXT-X-MAP:URI="init.mp4?e=123&s={init_sig}"'
    assert out[3] == f"seg_00000.m4s?e=123&s={seg_sig}"
    assert out[2] == "#EXTINF:6.0," and out[-1] == "#EXT-X-ENDLIST"


def test_parent_paths_resolve_and_foreign_uris_stay() -> None:
    text = "../480p/index.m3u8\nhttps://elsewhere/x.m4s\n/other/x.m4s\nseg.m4s?x=1\n"
    out = sign_playlist(text, URI, expires=5, secret=SECRET).splitlines()
    assert (
        out[0] == f"../480p/index.m3u8?e=5&s={sign('/cdn/t/a/v/j/hls/480p/index.m3u8', 5, SECRET)}"
    )
    assert out[1:] == ["https://elsewhere/x.m4s", "/other/x.m4s", "seg.m4s?x=1"]
