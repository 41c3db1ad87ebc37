"""Decoded frames to bytes, refusing NaN: the first step of the quality gate.

A pipeline's decoded float frames are the last place a NaN (or an infinity) can be
seen: turned into uint8 it becomes some byte, and the video looks merely odd. So the
conversion checks first, and raises :class:`NonFiniteFrames`, which fails the job
with ``qc_failed`` (render.qc holds the rest of the gate). Torch-free, so the worker
can name the error without importing torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NonFiniteFrames", "to_uint8"]


class NonFiniteFrames(ValueError):
    """Decoded frames held NaN or infinite values. A ``ValueError``: every rank of a
    parallel engine decodes the same frames, so every rank refuses them alike."""

    code = "qc_failed"

    def __init__(self, count: int, total: int) -> None:
        super().__init__(f"nan: {count} of {total} decoded values are NaN or infinite")
        self.count = count
        self.total = total


def to_uint8(frames: Any) -> np.ndarray:
    """Float frames in [0, 1] as uint8 (rounded); raises :class:`NonFiniteFrames`."""
    values = np.asarray(frames)
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise NonFiniteFrames(bad, int(values.size))
    return np.asarray((values * 255.0).round(), dtype=np.uint8)
