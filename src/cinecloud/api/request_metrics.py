"""ASGI middleware: every HTTP request answered, counted by method, route template and
status (``cinecloud_http_requests_total``), so an operator sees which calls load the
control plane: users' submissions and polls, and workers' leases, events and deliveries.
The route is the path template (``/v1/videos/{video_id}``), never the raw path, which
would make one series per video."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cinecloud.telemetry.metrics import Metrics

__all__ = ["CountRequests"]


class CountRequests:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an app that raised before answering

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
