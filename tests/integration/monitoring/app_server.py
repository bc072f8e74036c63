"""`python -m tests.integration.monitoring.app_server`: the tenant app under uvicorn, as a county
serves it, with a test-only server-side delay.

The delay is an ASGI wrapper added here, in the tests, innermost in the app's middleware (inside
ServerTimingMiddleware), so the app's `Server-Timing` counts it as the app's own time, exactly like
a slow handler would be counted. The app itself has no such setting. A request asks for it with the
DELAY_HEADER (so delayed and undelayed requests can alternate on one server, and the machine's
load affects both alike); MONITORING_TEST_SERVER_DELAY_MS delays every request.
"""

from __future__ import annotations

import asyncio
import os
import time

import uvicorn
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_app.app import create_app
from tenant_app.settings import load_settings

DELAY_VARIABLE = "MONITORING_TEST_SERVER_DELAY_MS"
DELAY_HEADER = "x-countycloud-test-delay-ms"
# The delay as it actually happened (a loaded machine oversleeps): the test compares with this.
ACTUAL_HEADER = "x-countycloud-test-delay-actual-ms"
_HEADER = DELAY_HEADER.encode()


class ServerDelay:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            asked = next((float(v) / 1000 for k, v in scope["headers"] if k == _HEADER), self.seconds)
            if asked > 0:
                began = time.perf_counter()
                await asyncio.sleep(asked)
                actual = f"{(time.perf_counter() - began) * 1000:.3f}".encode()

                async def send_actual(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        message["headers"] = [*message.get("headers", []), (ACTUAL_HEADER.encode(), actual)]
                    await send(message)

                await self.app(scope, receive, send_actual)
                return
        await self.app(scope, receive, send)


def main() -> None:
    settings = load_settings()
    app = create_app(settings)
    delay_ms = float(os.environ.get(DELAY_VARIABLE, "0"))
    # Appended last = innermost: inside the Server-Timing middleware (see starlette's
    # build_middleware_stack), so the delay is the server's, as the test means it to be.
    app.user_middleware.append(Middleware(ServerDelay, seconds=delay_ms / 1000))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
