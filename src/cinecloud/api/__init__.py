"""The HTTP API: routers (one per resource), wire schemas, auth and limits."""

from cinecloud.api.app import build_state, create_app

__all__ = ["build_state", "create_app"]
