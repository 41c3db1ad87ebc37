"""Progress as the worker reports it: a job's overall percent, the protocol's progress
event, and the throttle that keeps ``events`` calls to a few a second."""

from __future__ import annotations

from typing import Any

__all__ = ["EVENT_INTERVAL_S", "EventThrottle", "progress_event", "progress_percent"]

#: At most one progress ``events`` call per this many seconds (stage changes excepted).
EVENT_INTERVAL_S = 0.1

# Share of the whole job (percent) each stage covers, for the progress figure.
_STAGE_SPAN: dict[str, tuple[int, int]] = {
    "model_load": (0, 0),
    "text_encode": (0, 5),
    "denoise": (5, 90),
    "decode": (90, 95),
    "render": (95, 97),
    "upload": (97, 100),
}


def progress_percent(stage: str, step: int, total_steps: int) -> int:
    """Overall progress 0-100 of a job at ``step`` of ``total_steps`` in ``stage``."""
    lo, hi = _STAGE_SPAN.get(stage, (0, 0))
    frac = min(max(step / total_steps, 0.0), 1.0) if total_steps > 0 else 0.0
    return int(lo + (hi - lo) * frac)


def progress_event(
    stage: str,
    step: int,
    total_steps: int,
    elapsed_s: float,
    at: float = 0.0,
    preview: str = "",
) -> dict[str, Any]:
    """One worker-protocol progress event; ``at`` (wall-clock seconds, when the worker saw
    it happen) goes with it when given, so a job's timeline does not depend on delivery,
    and so does a ``preview`` image (a ``data:`` URL, workers.preview)."""
    eta = None
    if stage == "denoise" and 0 < step <= total_steps:
        eta = round(elapsed_s / step * (total_steps - step), 3)
    event: dict[str, Any] = {
        "type": "progress",
        "stage": stage,
        "step": step,
        "total_steps": total_steps,
        "progress": progress_percent(stage, step, total_steps),
        "eta_s": eta,
    }
    if at > 0:
        event["at"] = round(at, 6)
    if preview:
        event["preview"] = preview
    return event


class EventThrottle:
    """Lets through a stage change, a stage's last step, or one event per interval."""

    def __init__(self, interval_s: float = EVENT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._stage: str | None = None
        self._last_at: float | None = None

    def should_send(self, stage: str, step: int, total_steps: int, now: float) -> bool:
        due = self._last_at is None or now - self._last_at >= self._interval_s
        if stage != self._stage or step >= total_steps or due:
            self._stage, self._last_at = stage, now
            return True
        return False
