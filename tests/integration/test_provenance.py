"""Provenance on real files: the signed C2PA manifest (c2pa-python), the AIGC label in
the MP4's metadata, the watermark through real encodes, and ``cinecloud verify``."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from cinecloud.cli.main import app
from cinecloud.config import ProvenanceConfig, QcConfig
from cinecloud.engine.registry import GenerationParams
from cinecloud.render.encode import encode_mp4, mp4_box_order, probe_video
from cinecloud.render.provenance import read_label, verify_c2pa
from cinecloud.render.qc import QcFailed
from cinecloud.render.signing import CA_FILE, local_credentials, make_test_ca
from cinecloud.render.trusted import TrustSettings, render_trusted
from cinecloud.render.watermark import bit_accuracy, decode_watermark, video_luma
from cinecloud.testing.fake_runner import fake_frames

pytestmark = pytest.mark.integration

JOB = "video_00112233445566778899aabb"


def frames(seed: int = 0) -> np.ndarray:
    return fake_frames(GenerationParams("x", "", 64, 64, 16, 8, 1, 1.0, seed))


def settings(home: Path, **prov: object) -> TrustSettings:
    return TrustSettings(ProvenanceConfig(**prov), QcConfig(), home, "cinecloud/test")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One job rendered with provenance at the shapes model's display size: (home, out)."""
    root = tmp_path_factory.mktemp("prov")
    out = root / "job"
    result = render_trusted(
        frames(), out, 8, job_id=JOB, settings=settings(root / "home"), display_size=(256, 256)
    )
    assert {"video.mp4", "hls/master.m3u8", "hls/256p/init.mp4"} <= {f.name for f in result.files}
    assert result.qc["passed"] == 1 and result.qc["flow_warp_error"] is not None
    assert set(result.timings) == {"qc", "provenance"}
    return root / "home", out


def anchors(home: Path) -> str:
    return (home / "c2pa" / CA_FILE).read_text()


def test_mp4_carries_a_trusted_manifest_label_and_watermark(rendered: tuple[Path, Path]) -> None:
    home, out = rendered
    video = out / "video.mp4"
    check = verify_c2pa(video, anchors(home))
    assert check.state == "Trusted" and check.failures == ()
    assert check.assertions["org.cinecloud.aigc"]["AIGC"]["ProduceID"] == JOB
    actions = check.assertions["c2pa.actions.v2"]["actions"]
    assert actions[0]["digitalSourceType"].endswith("trainedAlgorithmicMedia")
    # elsewhere (no trust anchors) the signature still validates, the signer is unknown
    assert verify_c2pa(video).state == "Valid"
    label = read_label(video)
    assert label is not None and label["AIGC"]["Label"] == "1"
    assert label["AIGC"]["ContentProducer"] == "cinecloud/test"
    assert label["AIGC"]["ProduceID"] == JOB
    assert decode_watermark(video_luma(video)).job_id == JOB
    # still a plain, fast-start MP4 with every frame
    assert mp4_box_order(video)[:3] == ["ftyp", "uuid", "moov"]
    assert probe_video(video).frames == 16


def test_hls_init_segment_is_signed_and_still_plays(rendered: tuple[Path, Path]) -> None:
    home, out = rendered
    init = out / "hls" / "256p" / "init.mp4"
    assert verify_c2pa(init, anchors(home)).state == "Trusted"
    with av.open(str(out / "hls" / "256p" / "index.m3u8")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 16


def test_any_change_to_the_file_breaks_the_manifest(rendered: tuple[Path, Path]) -> None:
    home, out = rendered
    data = bytearray((out / "video.mp4").read_bytes())
    at = data.find(b'"Label":"1"')
    data[at + 9] = ord("0")  # relabel it as not generated
    forged = out.parent / "forged.mp4"
    forged.write_bytes(bytes(data))
    check = verify_c2pa(forged, anchors(home))
    assert check.state == "Invalid" and "assertion.bmffHash.mismatch" in check.failures


@pytest.mark.parametrize(("size", "crf"), [(None, 28), ((128, 128), 18)])
def test_the_watermark_outlives_a_re_encode_that_strips_the_rest(
    rendered: tuple[Path, Path], tmp_path: Path, size: tuple[int, int] | None, crf: int
) -> None:
    _, out = rendered
    with av.open(str(out / "video.mp4")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    copy = encode_mp4(decoded, tmp_path / "copy.mp4", 8, display_size=size, crf=crf)
    assert not verify_c2pa(copy).present and read_label(copy) is None
    assert decode_watermark(video_luma(copy)).job_id == JOB
    # both at once, on these sawtooth frames (hard on a low-frequency mark): most bits
    half = encode_mp4(decoded, tmp_path / "half28.mp4", 8, display_size=(128, 128), crf=28)
    assert bit_accuracy(decode_watermark(video_luma(half)).bits, JOB) >= 0.9


def test_verify_command(rendered: tuple[Path, Path], tmp_path: Path) -> None:
    home, out = rendered
    runner = CliRunner()
    env = {"CINECLOUD_SERVER__HOME": str(home)}
    ok = runner.invoke(app, ["verify", str(out / "video.mp4"), "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)
    assert report["valid"] and report["c2pa"]["trusted"]
    assert report["watermark"]["job_id"] == JOB and report["aigc_label"]["AIGC"]["ProduceID"] == JOB
    # without this home's CA the signer is unknown: valid, unless trust is required
    other = {"CINECLOUD_SERVER__HOME": str(tmp_path / "elsewhere")}
    assert runner.invoke(app, ["verify", str(out / "video.mp4")], env=other).exit_code == 0
    strict = runner.invoke(app, ["verify", str(out / "video.mp4"), "--require-trust"], env=other)
    assert strict.exit_code == 1 and "not trusted" in strict.output
    plain = encode_mp4(frames(), tmp_path / "plain.mp4", 8)
    bare = runner.invoke(app, ["verify", str(plain)], env=env)
    assert bare.exit_code == 1 and "no valid provenance" in bare.output
    assert "no C2PA manifest" in bare.output
    missing = runner.invoke(app, ["verify", str(tmp_path / "nope.mp4")], env=env)
    assert missing.exit_code == 2
    (tmp_path / "notes.txt").write_text("not a video")
    assert runner.invoke(app, ["verify", str(tmp_path / "notes.txt")], env=env).exit_code == 2


def test_a_deployments_own_certificate_signs(tmp_path: Path) -> None:
    ca_dir = tmp_path / "their-ca"
    make_test_ca(ca_dir)
    own = settings(
        tmp_path / "home",
        cert_path=ca_dir / "signer-chain.pem",
        key_path=ca_dir / "signer-key.pem",
        sign_hls=False,
    )
    render_trusted(frames(1), tmp_path / "job", 8, job_id="job-7", settings=own)
    assert verify_c2pa(tmp_path / "job" / "video.mp4", (ca_dir / CA_FILE).read_text()).trusted
    assert not (tmp_path / "home" / "c2pa").exists()  # no local CA was made
    assert not verify_c2pa(tmp_path / "job" / "hls" / "64p" / "init.mp4").present


def test_local_credentials_are_made_once(tmp_path: Path) -> None:
    first = local_credentials(tmp_path)
    assert local_credentials(tmp_path) == first
    assert (tmp_path / "c2pa" / "signer-key.pem").stat().st_mode & 0o077 == 0


def test_caption_is_drawn_and_the_mark_survives_it(tmp_path: Path) -> None:
    captioned = settings(tmp_path / "home", caption=True, sign_hls=False)
    render_trusted(frames(2), tmp_path / "a", 8, job_id=JOB, settings=captioned)
    render_trusted(frames(2), tmp_path / "b", 8, job_id=JOB, settings=settings(tmp_path / "home"))
    with (
        av.open(str(tmp_path / "a" / "video.mp4")) as a,
        av.open(str(tmp_path / "b" / "video.mp4")) as b,
    ):
        fa = [f.to_ndarray(format="rgb24").astype(int) for f in a.decode(video=0)]
        fb = [f.to_ndarray(format="rgb24").astype(int) for f in b.decode(video=0)]
    bottom = np.abs(fa[0][-16:] - fb[0][-16:]).mean()
    top = np.abs(fa[0][:16] - fb[0][:16]).mean()
    assert bottom > 20 > top  # the caption sits at the bottom
    assert decode_watermark(video_luma(tmp_path / "a" / "video.mp4")).job_id == JOB


def test_a_failed_gate_writes_nothing(tmp_path: Path) -> None:
    black = np.zeros((16, 64, 64, 3), np.uint8)
    with pytest.raises(QcFailed, match="black: 16 of 16"):
        render_trusted(black, tmp_path / "job", 8, job_id=JOB, settings=settings(tmp_path))
    assert not (tmp_path / "job").exists()


def test_a_failed_gate_is_the_verdict_even_when_marking_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate reads the frames while they are marked: frames that fail it fail the job
    as ``qc_failed``, not as whatever error the marking met meanwhile."""
    import cinecloud.render.trusted as trusted

    def broken(*args: object, **kw: object) -> None:
        raise OSError("the marking failed")

    monkeypatch.setattr(trusted, "embed_watermark", broken)
    black = np.zeros((16, 64, 64, 3), np.uint8)
    with pytest.raises(QcFailed, match="black: 16 of 16"):
        render_trusted(black, tmp_path / "job", 8, job_id=JOB, settings=settings(tmp_path))
    with pytest.raises(OSError, match="marking failed"):  # frames that pass: its own error
        render_trusted(frames(3), tmp_path / "ok", 8, job_id=JOB, settings=settings(tmp_path))
    assert not (tmp_path / "job").exists() and not (tmp_path / "ok").exists()
