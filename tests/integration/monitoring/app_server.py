"""`python -m tests.integration.monitoring.app_server`: the tenant app under uvicorn, as a county
serves it, with an optional test-only server-side delay.

The delay (MONITORING_TEST_SERVER_DELAY_MS) is an ASGI wrapper added here, in the tests, innermost
in the app's middleware (inside ServerTimingMiddleware), so the app's `Server-Timing` counts it as
the app's own time, exactly like a slow handler would be counted. The app itself has no such setting.
"""

from __future__ import annotations

import asyncio
import os

import uvicorn
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tenant_app.app import create_app
from tenant_app.settings import load_settings

DELAY_VARIABLE = "MONITORING_TEST_SERVER_DELAY_MS"


class ServerDelay:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            await asyncio.sleep(self.seconds)
        await self.app(scope, receive, send)


def main() -> None:
    settings = load_settings()
    app = create_app(settings)
    delay_ms = float(os.environ.get(DELAY_VARIABLE, "0"))
    if delay_ms > 0:
        # Appended last = innermost: inside the Server-Timing middleware (see starlette's
        # build_middleware_stack), so the delay is the server's, as the test means it to be.
        app.user_middleware.append(Middleware(ServerDelay, seconds=delay_ms / 1000))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
