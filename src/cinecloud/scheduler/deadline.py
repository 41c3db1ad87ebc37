"""Deadlines: the ``Cancel-After`` request header, and which queued jobs are past theirs.

``Cancel-After`` takes either form HTTP's ``Retry-After`` takes:

- **delta-seconds**: a whole number of seconds from when the request arrives
  (``Cancel-After: 120``), at least 1;
- an **HTTP-date** (RFC 9110 IMF-fixdate, ``Cancel-After: Wed, 21 Oct 2026 07:28:00 GMT``),
  which must lie in the future.

Either way the deadline is at most ``max_s`` seconds away. A job that has not started
by its deadline fails with ``deadline_exceeded``; a job already running keeps running.
"""

from __future__ import annotations

import email.utils

__all__ = ["InvalidDeadline", "parse_cancel_after"]

_EXAMPLE = "whole seconds (e.g. 120) or an HTTP-date (e.g. Wed, 21 Oct 2026 07:28:00 GMT)"


class InvalidDeadline(ValueError):
    """A ``Cancel-After`` value that is malformed, in the past or too far away."""


def _http_date(text: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": no zone given, so the instant is unknown
        return None
    return when.timestamp()


def parse_cancel_after(value: str, now: float, max_s: float) -> float:
    """The absolute deadline (Unix seconds) that ``value`` names, received at ``now``."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text)
        if seconds < 1:
            raise InvalidDeadline(f"Cancel-After must be at least 1 second (got {text})")
        deadline = now + seconds
    else:
        parsed = _http_date(text)
        if parsed is None:
            raise InvalidDeadline(f"Cancel-After must be {_EXAMPLE} (got {value!r})")
        if parsed <= now:
            raise InvalidDeadline(f"Cancel-After names a time in the past ({text})")
        deadline = parsed
    if deadline - now > max_s:
        raise InvalidDeadline(
            f"Cancel-After must be at most {max_s:g} seconds away (got {deadline - now:g})"
        )
    return deadline
