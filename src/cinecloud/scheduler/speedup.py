"""The speed-up model of one video across N ranks, and the fit of its one parameter.

Running one video on N ranks divides the work but adds communication and the parts
that do not split. The model (Amdahl's form) is

    S(N) = N / (1 + alpha * (N - 1))

with ``alpha`` in [0, 1]: 0 is a perfect split (S(N) = N), 1 is no gain at all
(S(N) = 1). A job that takes ``T1`` seconds on one rank takes ``T1 / S(N)`` on N.

``alpha`` is fitted per model family from timings of the same video at several
widths (:func:`fit_alpha`), and stored in ``scheduler/alpha.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AlphaFitError",
    "Measurement",
    "fit_alpha",
    "parse_measurement",
    "service_time",
    "speedup",
]


class AlphaFitError(ValueError):
    """The measurements cannot give an ``alpha``: too few, or not a speed-up curve."""


@dataclass(frozen=True)
class Measurement:
    """One timing: the same video took ``seconds`` on ``ranks`` ranks."""

    ranks: int
    seconds: float


def parse_measurement(text: str) -> Measurement:
    """``"RANKS=SECONDS"`` (e.g. ``"2=27.1"``) to a :class:`Measurement`."""
    ranks, sep, seconds = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return Measurement(int(ranks), float(seconds))
    except ValueError:
        raise AlphaFitError(f"a timing is RANKS=SECONDS, e.g. 2=27.1 (got {text!r})") from None


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (got {alpha})")


def speedup(n: int, alpha: float) -> float:
    """``S(n) = n / (1 + alpha (n - 1))``: how many times faster n ranks are than one."""
    if n < 1:
        raise ValueError(f"ranks must be at least 1 (got {n})")
    _check_alpha(alpha)
    return n / (1.0 + alpha * (n - 1))


def service_time(work: float, n: int, alpha: float) -> float:
    """Seconds that ``work`` (seconds on one rank) takes on ``n`` ranks."""
    if work < 0:
        raise ValueError(f"work must not be negative (got {work})")
    return work / speedup(n, alpha)


def _one_rank_time(points: Sequence[Measurement]) -> float:
    singles = [p.seconds for p in points if p.ranks == 1]
    if not singles:
        raise AlphaFitError("alpha needs a timing on 1 rank to compare against")
    return sum(singles) / len(singles)


def fit_alpha(measurements: Sequence[Measurement], tolerance: float = 0.05) -> float:
    """The least-squares ``alpha`` of timings of one video at several widths.

    With ``T1`` the (mean) one-rank time, each timing on N > 1 ranks gives
    ``y = N * T(N) / T1 - 1``, which the model says is ``alpha * (N - 1)``; the fit
    through the origin is ``sum(x * y) / sum(x * x)`` with ``x = N - 1``.

    A fit below 0 (faster than linear) or above 1 (slower than one rank) by more
    than ``tolerance`` means the timings are not of one video or are too noisy, and
    raises :class:`AlphaFitError`; inside the tolerance the value is clipped to [0, 1].
    """
    for p in measurements:
        if p.ranks < 1 or p.seconds <= 0:
            raise AlphaFitError(f"bad measurement {p}: ranks >= 1 and seconds > 0 are needed")
    t1 = _one_rank_time(measurements)
    wide = [p for p in measurements if p.ranks > 1]
    if not wide:
        raise AlphaFitError("alpha needs at least one timing on more than 1 rank")
    xs = [float(p.ranks - 1) for p in wide]
    ys = [p.ranks * p.seconds / t1 - 1.0 for p in wide]
    alpha = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    if alpha < -tolerance or alpha > 1.0 + tolerance:
        raise AlphaFitError(
            f"the timings give alpha={alpha:.3f}, outside [0, 1]: "
            "they are not one video's speed-up curve"
        )
    return min(max(alpha, 0.0), 1.0)
