"""A job's frames to files it may deliver: the QC gate, then provenance, then the render.

1. The quality gate (render.qc) reads the frames; failing it raises
   :class:`~cinecloud.render.qc.QcFailed` before any file is written.
2. With provenance on: an optional visible caption over the first 2 seconds, then the
   invisible watermark (render.watermark) in every frame, so the MP4, the HLS ladder,
   the poster and the previews all carry it.
   The frames are first scaled to the display size, so the mark is exact in the frames
   the encoder gets: marked at the source size and scaled after, a saturated edge
   (white caption text on black) rings, clips, and moves a few coefficients off their
   lattice in every frame alike, which no vote across frames can undo.
3. The render (render.encode) writes the files; the MP4 gets the AIGC label in its
   metadata.
4. The MP4 (and each HLS init segment) gets a signed C2PA manifest (render.provenance).

The settings cross into the render process as a plain dict (:meth:`TrustSettings.to_dict`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cinecloud.config import Config, ProvenanceConfig, QcConfig
from cinecloud.render.encode import RenderedFile, render_outputs
from cinecloud.render.provenance import aigc_label, c2pa_manifest, label_metadata, sign_in_place
from cinecloud.render.qc import QcReport, run_qc
from cinecloud.render.signing import Credentials, load_credentials, local_credentials
from cinecloud.render.watermark import embed_watermark, payload_hex

__all__ = [
    "CAPTION",
    "CAPTION_SECONDS",
    "TrustSettings",
    "TrustedRender",
    "add_caption",
    "render_trusted",
    "scale_frames",
]

CAPTION = "AI-generated"
CAPTION_SECONDS = 2


@dataclass(frozen=True)
class TrustSettings:
    """What the render needs to know about QC and provenance."""

    provenance: ProvenanceConfig
    qc: QcConfig
    home: Path  # where the local test CA lives
    producer: str  # ContentProducer of the AIGC label: "cinecloud/<deployment>"

    @classmethod
    def from_config(cls, cfg: Config) -> TrustSettings:
        deployment = cfg.provenance.deployment or urlsplit(cfg.worker.server_url).netloc
        return cls(cfg.provenance, cfg.qc, cfg.server.home, f"cinecloud/{deployment}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return _plain(data)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrustSettings:
        prov = dict(data["provenance"])
        for key in ("cert_path", "key_path", "trust_anchors"):
            prov[key] = Path(prov[key]) if prov.get(key) else None
        return cls(
            ProvenanceConfig(**prov), QcConfig(**data["qc"]), Path(data["home"]), data["producer"]
        )


@dataclass(frozen=True)
class TrustedRender:
    files: list[RenderedFile]
    qc: dict[str, Any]  # the QC report's record ({} with QC off)
    timings: dict[str, float]  # seconds: "qc" and "provenance" (inside the render time)


def render_trusted(
    frames: np.ndarray,
    out_dir: Path,
    fps: int,
    *,
    job_id: str,
    settings: TrustSettings,
    display_size: tuple[int, int] | None = None,
    model: str = "",
    clock: Callable[[], float] = time.perf_counter,
) -> TrustedRender:
    """Gate, mark, render and sign ``frames``; raises QcFailed before writing anything.

    The gate reads the frames on a second thread while they are marked (both are mostly
    numpy and OpenCV, which let go of the interpreter lock); nothing is written until
    it has passed."""

    def gate(source: np.ndarray) -> tuple[QcReport, float]:
        began = clock()
        return run_qc(source, settings.qc), clock() - began

    with ThreadPoolExecutor(1, thread_name_prefix="qc") as pool:
        gating = pool.submit(gate, frames) if settings.qc.enabled else None
        try:
            frames, marking_s = _mark(frames, fps, job_id, settings, display_size, clock)
        except Exception:
            if gating is not None:
                gating.result()  # frames that fail the gate are that, whatever else failed
            raise
        report, qc_s = gating.result() if gating is not None else (None, 0.0)
    prov = settings.provenance
    payload = payload_hex(job_id)
    label = aigc_label(settings.producer, job_id, reserved_code=payload)
    metadata = label_metadata(label) if prov.enabled else None
    files = render_outputs(frames, out_dir, fps, display_size=display_size, metadata=metadata)
    rendered = clock()
    if prov.enabled:
        credentials = _credentials(settings)
        for item in files:
            if item.name == "video.mp4" or (prov.sign_hls and item.name.endswith("/init.mp4")):
                manifest = c2pa_manifest(item.name, label, payload, model)
                sign_in_place(item.path, manifest, credentials)
    signed = clock()
    timings = {"qc": qc_s, "provenance": marking_s + (signed - rendered)}
    return TrustedRender(files, report.record() if report else {}, timings)


def _mark(
    frames: np.ndarray,
    fps: int,
    job_id: str,
    settings: TrustSettings,
    display_size: tuple[int, int] | None,
    clock: Callable[[], float],
) -> tuple[np.ndarray, float]:
    """With provenance on, ``frames`` scaled to the display size, captioned and
    watermarked (else as they are), and the seconds that took."""
    started = clock()
    prov = settings.provenance
    if prov.enabled:
        if display_size is not None and display_size != (frames.shape[2], frames.shape[1]):
            frames = scale_frames(frames, display_size)  # mark what is encoded: see below
        if prov.caption:
            frames = add_caption(frames, fps)
        frames = embed_watermark(frames, job_id)
    return frames, clock() - started


_CREDENTIALS: dict[tuple[str, ...], Credentials] = {}


def _credentials(settings: TrustSettings) -> Credentials:
    """The signing credentials, read once per render process."""
    prov = settings.provenance
    key = (str(prov.cert_path), str(prov.key_path), prov.alg, str(settings.home))
    if key not in _CREDENTIALS:
        if prov.cert_path is not None and prov.key_path is not None:
            _CREDENTIALS[key] = load_credentials(prov.cert_path, prov.key_path, prov.alg)
        else:
            _CREDENTIALS[key] = local_credentials(settings.home)
    return _CREDENTIALS[key]


def scale_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frames`` scaled to ``size`` (width, height) with Lanczos, as the encoder would."""
    return np.stack(
        [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames]
    )


def add_caption(frames: np.ndarray, fps: int, text: str = CAPTION) -> np.ndarray:
    """``frames`` with ``text`` in a dark box at the bottom left for the first 2 seconds."""
    out = frames.copy()
    height, width = frames.shape[1:3]
    size = max(8, min(height // 10, width // (len(text) // 2 + 2)))
    font = ImageFont.load_default(size=size)
    margin = max(2, size // 3)
    for index in range(min(len(out), CAPTION_SECONDS * fps)):
        image = Image.fromarray(out[index])
        draw = ImageDraw.Draw(image)
        left, top, right, bottom = draw.textbbox((margin, height - margin - size), text, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((margin, height - margin - size), text, font=font, fill=(255, 255, 255))
        out[index] = np.asarray(image)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
