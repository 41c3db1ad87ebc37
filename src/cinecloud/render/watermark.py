"""An invisible watermark that carries the job id in every frame.

Scheme (hand-rolled on numpy: the packaged DWT-DCT watermarkers pull in a GUI build of
OpenCV and ONNX Runtime, and are known not to survive resizing; this one is ~150 lines):

- **Payload**, 112 bits: a 96-bit body and a 16-bit check. A job id of the form
  ``video_<24 hex>`` (what the control plane issues) is carried whole, so the id can be
  read back from a copy that lost its metadata; any other id is carried as a 96-bit
  BLAKE2b hash. The check (BLAKE2b of a kind tag and the body) tells a watermark from
  noise: an unmarked video passes it by chance once in 32,768 tries.
- **Where**: the luma of each frame, in its 224 lowest 2-D DCT-II frequencies
  (``u, v >= 1``, a quarter disc of radius 17, shuffled by a fixed seed): every bit
  twice. The
  coefficients are normalised by the frame size, so a frame scaled up or down keeps
  them: the same code reads the 64x64 source, its 256x256 delivery and a half-size copy.
- **How**: quantisation index modulation. Each coefficient moves to the nearest point of
  a lattice of step :data:`STEP` luma levels (shifted by a per-coefficient dither) whose
  parity is the bit. The change, the same on R, G and B, is at most half a step per
  coefficient (PSNR about 41 dB); values clipped at 0 or 255 are re-embedded
  (up to :data:`_ROUNDS` rounds).
- **Reading**: every frame votes on every bit, each vote weighted by how close its
  coefficients sit to a lattice point (``cos`` of the lattice phase, summed over the two
  copies); each bit is the weighted majority over the frames. Weighting lets a clear
  frame outvote several blurred ones: on a hard case (a 128x128 copy at CRF 28) it got
  98% of the bits right where the plain majority got 97%.

Anyone with this code can read the mark (and so remove it): it traces a copy to its
job, it does not prove anything. The signed C2PA manifest does (render.provenance).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

__all__ = [
    "PAYLOAD_BITS",
    "STEP",
    "WatermarkReading",
    "bit_accuracy",
    "decode_watermark",
    "embed_watermark",
    "frame_votes",
    "payload_bits",
    "payload_hex",
    "video_luma",
]

BODY_BITS = 96
CHECK_BITS = 16
PAYLOAD_BITS = BODY_BITS + CHECK_BITS
COPIES = 2
STEP = 1.0  # QIM lattice step, in 8-bit luma levels
_BAND = 20  # frequencies 1.._BAND-1 on each axis
_SEED = 0x63696E65
_ROUNDS = 4
_CONVERGED = 0.02  # of a step: close enough to the lattice to stop
_SLACK = 0.1  # of a step: how far a coefficient may sit from its lattice point
_MAX_SHIFT = 0.75  # of a step: the longest shift kept for continuity
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # BT.709
_JOB_ID = re.compile(r"video_([0-9a-f]{24})")
_KINDS = (b"id", b"hash")


def _layout() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, bit index, dither) for each of the ``PAYLOAD_BITS * COPIES`` coefficients."""
    rng = np.random.default_rng(_SEED)
    cells = np.array([(u, v) for u in range(1, _BAND) for v in range(1, _BAND)])
    # the lowest frequencies (a quarter disc): scaling and compression soften them least
    cells = cells[np.argsort(np.hypot(*cells.T), kind="stable")[: PAYLOAD_BITS * COPIES]]
    cells = cells[rng.permutation(len(cells))]
    owner = np.arange(len(cells)) % PAYLOAD_BITS
    dither = rng.uniform(0.0, 1.0, len(cells)).astype(np.float32)
    return cells[:, 0], cells[:, 1], owner, dither


_U, _V, _OWNER, _DITHER = _layout()


def _basis(n: int) -> np.ndarray:
    """DCT-II rows ``cos(pi (2x + 1) k / 2n)`` for k < _BAND, shaped (_BAND, n)."""
    x = np.arange(n, dtype=np.float64)
    k = np.arange(_BAND, dtype=np.float64)[:, None]
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n)).astype(np.float32)


def _coefficients(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The carrier coefficients of luma frames ((T, H, W) or (H, W)), and the two bases.

    Scaled so that a pattern ``a * cos_u(y) * cos_v(x)`` reads as ``a`` at any size.
    Written as two plain 2-D products (not batched ones): BLAS runs those well.
    """
    frames = luma.reshape(-1, *luma.shape[-2:])
    count, height, width = frames.shape
    bu, bv = _basis(height), _basis(width)
    rows = (frames.reshape(-1, width) @ bv.T).reshape(count, height, _BAND)
    full = (rows.transpose(0, 2, 1).reshape(-1, height) @ bu.T).reshape(count, _BAND, _BAND)
    full = full.transpose(0, 2, 1) * (4.0 / (height * width))
    return full[:, _U, _V].reshape(*luma.shape[:-2], len(_U)), bu, bv


def _pattern(delta: np.ndarray, bu: np.ndarray, bv: np.ndarray) -> np.ndarray:
    """The luma pattern (T, H, W) whose coefficients are ``delta`` (T, _BAND, _BAND)."""
    count = delta.shape[0]
    rows = (delta.reshape(-1, _BAND) @ bv).reshape(count, _BAND, -1)  # (T, u, W)
    width = rows.shape[2]
    cols: np.ndarray = bu.T @ rows.transpose(1, 0, 2).reshape(_BAND, -1)  # (H, T * W)
    return cols.reshape(-1, count, width).transpose(1, 0, 2)


# ---------------------------------------------------------------- payload


def payload_bits(job_id: str) -> np.ndarray:
    """The 112 bits (0/1, uint8) that mark ``job_id``'s frames."""
    match = _JOB_ID.fullmatch(job_id)
    if match:
        kind, body = _KINDS[0], bytes.fromhex(match.group(1))
    else:
        kind, body = _KINDS[1], hashlib.blake2b(job_id.encode(), digest_size=12).digest()
    check = hashlib.blake2b(kind + body, digest_size=2).digest()
    return np.unpackbits(np.frombuffer(body + check, np.uint8))


def payload_hex(job_id: str) -> str:
    """``job_id``'s payload as 28 hex digits (the label's ``ReservedCode1``)."""
    return np.packbits(payload_bits(job_id)).tobytes().hex()


def _read_payload(bits: np.ndarray) -> tuple[str | None, str | None]:
    """(job id, id hash) from decoded bits: one of them when the check holds, else neither."""
    raw = np.packbits(bits.astype(np.uint8)).tobytes()
    body, check = raw[: BODY_BITS // 8], raw[BODY_BITS // 8 :]
    for kind in _KINDS:
        if hashlib.blake2b(kind + body, digest_size=2).digest() == check:
            return (f"video_{body.hex()}", None) if kind == _KINDS[0] else (None, body.hex())
    return None, None


def bit_accuracy(bits: np.ndarray, job_id: str) -> float:
    """The share of ``bits`` equal to ``job_id``'s payload."""
    return float((bits.astype(np.uint8) == payload_bits(job_id)).mean())


# ---------------------------------------------------------------- embed


def embed_watermark(frames: np.ndarray, job_id: str) -> np.ndarray:
    """``frames`` (uint8, (T, H, W, 3)) with ``job_id`` embedded; a new array.

    Each frame's coefficients move onto the lattice, except that a coefficient keeps the
    previous frame's shift while that leaves it within :data:`_SLACK` of a lattice point
    of its bit: the pattern then stays the same from frame to frame wherever the picture
    does, which the encoder predicts for nearly free (re-quantising every frame gave each
    frame a fresh faint pattern, and a clean 832x480 clip's MP4 grew 5 to 10 times).
    Clipping at 0 and 255 is made up for in up to :data:`_ROUNDS` more rounds.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    want = payload_bits(job_id)[_OWNER].astype(np.float32) / 2
    base = frames.astype(np.float32)
    coeffs, bu, bv = _coefficients(_luma(base))
    target = coeffs + _sticky_shifts(coeffs / STEP + _DITHER - want) * STEP
    marked = base.copy()
    pattern = np.zeros(frames.shape[:3], np.float32)
    for _ in range(_ROUNDS):
        correction = target - coeffs
        if np.abs(correction).max() < _CONVERGED * STEP:
            break
        delta = np.zeros((frames.shape[0], _BAND, _BAND), np.float32)
        delta[:, _U, _V] = correction
        pattern += _pattern(delta, bu, bv)
        np.add(base, pattern[..., None], out=marked)
        if marked.min() >= 0 and marked.max() <= 255:
            break  # nothing clipped: every coefficient is where it should be
        np.clip(marked, 0, 255, out=marked)
        coeffs, _, _ = _coefficients(_luma(marked))
    return np.round(marked, out=marked).astype(np.uint8)


def _sticky_shifts(phase: np.ndarray) -> np.ndarray:
    """Per frame and coefficient, the shift (in steps) that puts ``phase`` (T, K) on an
    integer: the previous frame's shift while it leaves it within _SLACK; else the
    smallest change of it onto an integer (the nearest integer to the shifted phase),
    unless that makes the shift longer than _MAX_SHIFT, then the nearest integer."""
    shifts = np.empty_like(phase)
    shift = np.round(phase[0]) - phase[0]
    for t in range(len(phase)):
        moved = phase[t] + shift
        redo = np.abs(moved - np.round(moved)) > _SLACK
        follow = np.round(moved) - phase[t]
        nearest = np.round(phase[t]) - phase[t]
        shift = np.where(redo, np.where(np.abs(follow) <= _MAX_SHIFT, follow, nearest), shift)
        shifts[t] = shift
    return shifts


def _luma(pixels: np.ndarray) -> np.ndarray:
    return pixels @ _LUMA


# ---------------------------------------------------------------- read


@dataclass(frozen=True)
class WatermarkReading:
    """What the frames of a video say: the bits, and the id they carry if the check holds."""

    frames: int
    bits: np.ndarray  # PAYLOAD_BITS decoded bits (0/1)
    job_id: str | None  # a control-plane job id carried whole
    id_hash: str | None  # or the 96-bit hash (hex) of another id
    agreement: float  # mean share of frames whose own vote matches each decided bit

    @property
    def found(self) -> bool:
        return self.job_id is not None or self.id_hash is not None

    def matches(self, job_id: str) -> bool:
        """Whether the decoded bits are exactly ``job_id``'s payload."""
        return bool(np.array_equal(self.bits, payload_bits(job_id)))


def frame_votes(luma: np.ndarray) -> np.ndarray:
    """One frame's soft votes per payload bit: positive for 0, negative for 1."""
    coeffs, _, _ = _coefficients(np.asarray(luma, np.float32))
    soft = np.cos(2 * np.pi * (coeffs / STEP + _DITHER))
    votes = np.zeros(PAYLOAD_BITS, np.float32)
    np.add.at(votes, _OWNER, soft)
    return votes


def decode_watermark(lumas: Iterable[np.ndarray]) -> WatermarkReading:
    """Weighted majority vote over the frames' luma planes (each (H, W), 0..255, any size);
    with no frames at all, a reading of 0 frames that found nothing."""
    votes = [frame_votes(luma) for luma in lumas]
    if not votes:
        return WatermarkReading(0, np.zeros(PAYLOAD_BITS, np.uint8), None, None, 0.0)
    soft = np.stack(votes)
    bits = (soft.sum(axis=0) < 0).astype(np.uint8)
    agree = np.where(bits == 1, (soft < 0).sum(axis=0), (soft > 0).sum(axis=0)) / len(votes)
    job_id, id_hash = _read_payload(bits)
    return WatermarkReading(len(votes), bits, job_id, id_hash, float(agree.mean()))


def video_luma(path: Path, *, max_frames: int = 64) -> Iterator[np.ndarray]:
    """The luma planes (float32, 0..255) of up to ``max_frames`` frames of ``path``."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index >= max_frames:
                return
            yield _luma(frame.to_ndarray(format="rgb24").astype(np.float32))
