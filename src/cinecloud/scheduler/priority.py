"""Priority classes: a request's ``priority`` as a class name or a whole number.

``high``, ``normal`` and ``low`` are names for 10, 0 and -10; any whole number from
-100 to 100 may be given instead. Placement runs higher numbers first (after jobs past
the aging bound, which go first whatever their priority).
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "PRIORITY_CLASSES",
    "InvalidPriority",
    "parse_priority",
]

MIN_PRIORITY = -100
MAX_PRIORITY = 100
PRIORITY_CLASSES = MappingProxyType({"high": 10, "normal": 0, "low": -10})


class InvalidPriority(ValueError):
    """A priority that is neither a class name nor a whole number in range."""


def _whole(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    return None


def parse_priority(value: object) -> int:
    """The priority number of ``value``: a class name, a whole number (JSON) or its
    digits (a form field). Raises :class:`InvalidPriority` for anything else."""
    if isinstance(value, str) and value in PRIORITY_CLASSES:
        return PRIORITY_CLASSES[value]
    number = _whole(value)
    names = ", ".join(PRIORITY_CLASSES)
    if number is None:
        raise InvalidPriority(
            f"priority must be one of {names} or a whole number from {MIN_PRIORITY} "
            f"to {MAX_PRIORITY} (got {value!r})"
        )
    if not MIN_PRIORITY <= number <= MAX_PRIORITY:
        raise InvalidPriority(
            f"priority must be from {MIN_PRIORITY} to {MAX_PRIORITY} (got {number})"
        )
    return number
