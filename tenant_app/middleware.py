"""Pure ASGI middleware: Server-Timing on every response, and request count / latency metrics;
the client's address and scheme from a trusted gateway, and HSTS and Secure cookies over TLS.

Pure ASGI rather than @app.middleware("http") because the latter wraps every request in extra
tasks and streams, a cost the certification hot path notices.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_app import timing
from tenant_app.metrics import AppMetrics
from tenant_app.security import proxies

# Browsers remember for a year to come back over HTTPS only. No includeSubDomains: a county's host
# name may share its parent domain with services this app knows nothing about.
HSTS_VALUE = b"max-age=31536000"


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


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


def _secure_cookie(value: bytes) -> bytes:
    attributes = {part.strip().split(b"=", 1)[0].lower() for part in value.split(b";")[1:]}
    return value if b"secure" in attributes else value + b"; Secure"


class ForwardedMiddleware:
    """Who the client is and how it came, then what a TLS-served county's responses must carry.

    The client address and scheme come from X-Forwarded-For / X-Forwarded-Proto only when the
    direct peer is a trusted proxy (settings.trusted_proxies; see security/proxies.py); the
    resolved values replace scope["client"] and scope["scheme"], so everything after (the log-in
    throttle, the audit log's "client", request.url) sees the real ones. When the request came
    over TLS (by scheme, by the trusted gateway's word, or because settings.served_over_tls says
    the county is only published over HTTPS), every response gets Strict-Transport-Security and
    every cookie the Secure flag, so a session cookie is never sent back over plain HTTP.

    Settings are read from the app at request time: the middleware is added in build_app, before
    a county's settings exist (app.bind).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.tenant.settings
        trusted = proxies.trusted_proxies(settings.trusted_proxies)
        client = scope.get("client")
        peer = client[0] if client else None
        if trusted.trusts(peer):
            resolved = proxies.client_address(peer, _header_values(scope, b"x-forwarded-for"), trusted)
            if resolved is not None and resolved != peer:
                scope["client"] = (resolved, 0)
            https = proxies.forwarded_https(peer, _header_values(scope, b"x-forwarded-proto"), trusted)
            if https is not None:
                scope["scheme"] = "https" if https else "http"
        if not (settings.served_over_tls or scope.get("scheme") == "https"):
            await self.app(scope, receive, send)
            return
        if scope.get("scheme") != "https":
            scope["scheme"] = "https"  # links the app builds (redirects) keep to HTTPS as well

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (key, _secure_cookie(value) if key.lower() == b"set-cookie" else value)
                    for key, value in message.get("headers", [])
                    if key.lower() != b"strict-transport-security"
                ]
                headers.append((b"strict-transport-security", HSTS_VALUE))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_secure)
