"""When a failed webhook delivery is tried again: exponential backoff with jitter."""

from __future__ import annotations

__all__ = ["retry_delay"]


def retry_delay(attempt: int, base_s: float, max_s: float, rand: float) -> float:
    """Seconds before attempt ``attempt + 1``, after ``attempt`` (1, 2, ...) failed.

    ``base_s * 2**(attempt-1)``, capped at ``max_s``, then scaled by ``0.5 + rand / 2``
    ("equal jitter", ``rand`` in [0, 1)): half the wait is certain, so retries keep
    backing off, and the other half is random, so the deliveries of many jobs that failed
    together (a receiver's outage) do not all come back in the same second.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1 (got {attempt})")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1) (got {rand})")
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 62))
    return ceiling * (0.5 + rand / 2.0)
