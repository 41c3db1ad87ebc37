"""The quality gate a job's frames pass before anything is delivered.

:func:`measure` reads the frames; :func:`judge` is the pure policy over what it read
and the limits (:class:`cinecloud.config.QcConfig`). A job with a failure ends
``failed`` with code ``qc_failed`` and none of its files are uploaded.

- **NaN**: the engine checks the decoded float frames before their uint8 conversion
  (:mod:`cinecloud.engine.finite`); past that point a NaN would already be some byte.
  :func:`measure` counts non-finite values too when it is handed float frames.
- **Black**: a frame whose brightest 0.1% of pixels stay under ``black_level`` (a
  fraction of full-scale luma). Measured on the top quantile rather than the maximum,
  so a few stray bright pixels do not make a black frame pass; a small bright object
  (over 0.1% of the frame) does.
- **Frozen**: two consecutive frames whose mean absolute difference is under
  ``frozen_mad`` 8-bit levels and where no pixel changed by ``frozen_peak`` or more.
  Generated "still" shots move by about one level between frames (the sampler's
  noise); a repeated frame moves by none. The peak keeps a small object moving on a
  clean, static background (a tiny mean change, a large local one) from counting.

Recorded on every job, failing nothing:

- ``flicker``: the mean absolute change of mean luma between consecutive frames, as a
  fraction of full scale;
- ``flow_warp_error``: Farneback optical flow from frame t+1 back to frame t, frame t
  warped along it, then the mean absolute RGB difference to frame t+1, as a fraction of
  full scale, averaged over pairs. On frames scaled to at most 256 pixels a side, so it
  costs about the same at any size. (The same definitions as the shapes evaluator's.)
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

from cinecloud.config import QcConfig

__all__ = ["QcFailed", "QcReport", "QcStats", "judge", "measure", "run_qc"]

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
_TOP_QUANTILE = 0.999
_FLOW_SIDE = 256


@dataclass(frozen=True)
class QcStats:
    """What :func:`measure` read from a job's frames."""

    frames: int
    nonfinite: int  # NaN or infinite values (float frames only)
    black_frames: int
    frozen_pairs: int
    flicker: float
    flow_warp_error: float | None  # None: fewer than two frames


@dataclass(frozen=True)
class QcReport:
    stats: QcStats
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def record(self) -> dict[str, float | int | None]:
        """The job's ``qc`` field."""
        return {**asdict(self.stats), "passed": int(self.passed)}


class QcFailed(Exception):
    """The frames failed the gate; the job fails with code ``qc_failed``."""

    code = "qc_failed"

    def __init__(self, report: QcReport) -> None:
        super().__init__("quality check failed: " + "; ".join(report.failures))
        self.report = report


def judge(stats: QcStats, limits: QcConfig) -> tuple[str, ...]:
    """Why the frames may not be delivered (empty: they may)."""
    failures = []
    if stats.nonfinite:
        failures.append(f"nan: {stats.nonfinite} decoded values are NaN or infinite")
    if stats.frames and stats.black_frames / stats.frames >= limits.black_fraction:
        failures.append(f"black: {stats.black_frames} of {stats.frames} frames are black")
    pairs = stats.frames - 1
    if pairs > 0 and stats.frozen_pairs / pairs >= limits.frozen_fraction:
        failures.append(
            f"frozen: {stats.frozen_pairs} of {pairs} consecutive frame pairs are identical"
        )
    return tuple(failures)


def measure(frames: np.ndarray, limits: QcConfig, *, flow: bool = True) -> QcStats:
    """Read ``frames`` ((T, H, W, 3): uint8, or float in [0, 1] as a decoder returns)."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (T,H,W,3) with T >= 1, got {frames.shape}")
    nonfinite = 0
    if frames.dtype.kind == "f":
        finite = np.isfinite(frames)
        nonfinite = int(frames.size - np.count_nonzero(finite))
        frames = np.where(finite, frames, 0.0) * 255.0
    else:
        frames = frames.astype(np.float32)
    luma = (frames @ _LUMA).reshape(len(frames), -1)
    # the brightest 0.1% under the level <=> under 0.1% of the pixels at or above it
    bright = np.count_nonzero(luma >= limits.black_level * 255.0, axis=1) / luma.shape[1]
    black = int((bright < 1.0 - _TOP_QUANTILE).sum())
    frozen = sum(_frozen(a, b, limits) for a, b in itertools.pairwise(frames))
    means = luma.mean(axis=1)
    flicker = float(np.abs(np.diff(means)).mean() / 255.0) if len(means) > 1 else 0.0
    warp = _flow_warp_error(frames) if flow and len(frames) > 1 else None
    return QcStats(len(frames), nonfinite, black, frozen, flicker, warp)


def _frozen(a: np.ndarray, b: np.ndarray, limits: QcConfig) -> bool:
    change = np.abs(b - a)
    return bool(change.mean() < limits.frozen_mad and change.max() < limits.frozen_peak)


def run_qc(frames: np.ndarray, limits: QcConfig) -> QcReport:
    """Measure and judge; raises :class:`QcFailed` when the frames may not be delivered."""
    report = QcReport(stats := measure(frames, limits), judge(stats, limits))
    if not report.passed:
        raise QcFailed(report)
    return report


def _flow_warp_error(pixels: np.ndarray) -> float:
    import cv2

    work = _shrink(np.asarray(pixels, np.float32), _FLOW_SIDE)
    gray = np.clip(work @ _LUMA, 0, 255).astype(np.uint8)
    ys, xs = np.mgrid[0 : work.shape[1], 0 : work.shape[2]].astype(np.float32)
    buffer = np.zeros((*gray.shape[1:], 2), np.float32)
    errors: list[float] = []
    for t in range(len(work) - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[t + 1], gray[t], buffer, 0.5, 3, 15, 3, 5, 1.2, 0)
        warped = cv2.remap(
            work[t],
            xs + flow[..., 0],
            ys + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        errors.append(float(np.abs(warped - work[t + 1]).mean()))
    return float(np.mean(errors)) / 255.0


def _shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    """``pixels`` (T, H, W, 3) float32 scaled down (area) so neither side exceeds ``side``."""
    import cv2

    height, width = pixels.shape[1:3]
    scale = side / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in pixels])
