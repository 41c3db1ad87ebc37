"""Preview frames during denoising: when the child makes one, and how it travels.

Every ``worker.preview_interval_s`` (and at the last step) the child asks the engine for
its cheap image of the run so far (:attr:`StepInfo.preview
<cinecloud.engine.runner.StepInfo>`), shrinks it to a small JPEG and sends it with that
step's progress event as a ``data:`` URL. A 64x64 frame is about 2 KB, a 160-pixel one
under 8 KB, so the events stay small and the SSE stream carries them as they are.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable

import numpy as np

__all__ = ["MAX_SIDE", "PreviewMaker", "encode_preview", "preview_due"]

log = logging.getLogger(__name__)

#: The longest side of a preview image, in pixels.
MAX_SIDE = 160
_QUALITY = 70


def preview_due(
    step: int, total_steps: int, last_at: float | None, now: float, interval_s: float
) -> bool:
    """Whether step ``step`` of ``total_steps`` gets a preview: the first step, then one
    per ``interval_s``, and the last step; never with ``interval_s`` <= 0 or before a step."""
    if interval_s <= 0 or step < 1:
        return False
    return last_at is None or step >= total_steps or now - last_at >= interval_s


def encode_preview(frame: np.ndarray, max_side: int = MAX_SIDE) -> str:
    """``frame`` (H, W, 3) uint8 as a JPEG ``data:`` URL, its longest side at most
    ``max_side`` (small frames are shown as they are: the browser scales them)."""
    from PIL import Image

    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a preview frame is uint8 (H, W, 3) (got {frame.dtype}{frame.shape})")
    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class PreviewMaker:
    """One job's previews: asks for an image when one is due and encodes it."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last_at: float | None = None

    def take(
        self, step: int, total_steps: int, make: Callable[[], np.ndarray | None] | None
    ) -> str:
        """A preview for this step, or ``""`` (none due, none available). A preview is
        never worth a job: one that fails is logged and the job's others are skipped."""
        if make is None:
            return ""
        now = self._clock()
        if not preview_due(step, total_steps, self._last_at, now, self._interval_s):
            return ""
        self._last_at = now
        try:
            frame = make()
            return "" if frame is None else encode_preview(frame)
        except Exception:
            log.exception("preview failed; this job goes on without previews")
            self._interval_s = 0.0
            return ""
