"""FastAPI's own OpenTelemetry spans, kept to the public API.

Recent FastAPI versions make a server span per request (and spans for its dependency
resolution and endpoint) whenever a tracer provider is set. The worker protocol's calls
(a heartbeat every 0.3 s per busy worker), health checks and scrapes would each become a
trace of their own, so they are left out; ``/v1/...`` stays traced, and a job's ``submit``
span nests under its request's server span.
"""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI

__all__ = ["fastapi_telemetry", "untraced"]

_QUIET_PREFIXES = ("/internal/",)
_QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def untraced(scope: MutableMapping[str, Any]) -> bool:
    path = str(scope.get("path", ""))
    return path.startswith(_QUIET_PREFIXES) or path in _QUIET_PATHS


def fastapi_telemetry() -> dict[str, Any]:
    """``FastAPI(**fastapi_telemetry())``: the exclusions, where FastAPI has telemetry."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"exclude": untraced}}
