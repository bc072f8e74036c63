"""Server-Timing: the app's own time and the time spent in the database, per request.

The platform (monitoring.probes for its own probes, monitoring.rum for real users' requests seen at
the gateway) subtracts `app;dur` from the time it measures to split server from network time.
A request-scoped accumulator lives in a ContextVar; the engine's cursor events add to it. Work done
in the certification writer thread is reported back and added by the waiting handler.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event


@dataclass
class RequestTimer:
    db_seconds: float = 0.0


_current: ContextVar[RequestTimer | None] = ContextVar("tenant_app_request_timer", default=None)


def start_request() -> RequestTimer:
    timer = RequestTimer()
    _current.set(timer)
    return timer


def add_db_time(seconds: float) -> None:
    timer = _current.get()
    if timer is not None:
        timer.db_seconds += seconds


def header_value(app_seconds: float, db_seconds: float) -> str:
    return f"app;dur={app_seconds * 1000:.2f}, db;dur={db_seconds * 1000:.2f}"


def instrument(engine: Engine) -> None:
    """Attribute each statement's execution time to the request that issued it."""

    def before(conn: Any, _cursor: Any, _stmt: Any, _params: Any, context: Any, _many: Any) -> None:
        conn.info.setdefault("tenant_app_query_start", []).append(time.perf_counter())

    def after(conn: Any, _cursor: Any, _stmt: Any, _params: Any, context: Any, _many: Any) -> None:
        started = conn.info["tenant_app_query_start"].pop()
        add_db_time(time.perf_counter() - started)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
