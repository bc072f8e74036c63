"""Pure ASGI middleware: Server-Timing on every response, and request count / latency metrics.

Pure ASGI rather than @app.middleware("http") because the latter wraps every request in extra
tasks and streams, a cost the certification hot path notices.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_app import timing
from tenant_app.metrics import AppMetrics


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    # The route template, not the raw path, keeps the label set small (/vouchers/{voucher_id}).
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")


class ServerTimingMiddleware:
    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        timer = timing.start_request()
        status: dict[str, Any] = {"code": 500}

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                value = timing.header_value(time.perf_counter() - started, timer.db_seconds)
                message["headers"] = [*message.get("headers", []), (b"server-timing", value.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_label(scope)
            self.metrics.requests.labels(scope["method"], route, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
