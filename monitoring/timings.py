"""Splitting one answer's time into network, gateway queue and server (app vs database).

The app says how long it worked in its `Server-Timing` header (`app;dur=…, db;dur=…`, see
tenant_app/timing.py); whoever measured the whole answer (the probe's curl, or HAProxy for real
users) subtracts it: whatever is not queue and not server is network. `app` below is the app's own
code, i.e. the server time less the database's share.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

_METRIC = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$")
_DUR = re.compile(r"(?:^|;)\s*dur\s*=\s*\"?([0-9]+(?:\.[0-9]+)?)\"?")
# What tenant_app/timing.py sends, exactly: parsed with one match (the gateway log's hot path).
_APP_FORMAT = re.compile(r"^app;dur=([0-9]+(?:\.[0-9]+)?), db;dur=([0-9]+(?:\.[0-9]+)?)$")


class Source(enum.StrEnum):
    PROBE = "probe"
    REAL_USER = "real_user"


class Component(enum.StrEnum):
    TOTAL = "total"
    NETWORK = "network"
    QUEUE = "queue"
    SERVER = "server"
    APP = "app"
    DB = "db"


@dataclass(frozen=True)
class ServerTiming:
    app_ms: float
    db_ms: float


def parse_server_timing(value: str | None) -> ServerTiming | None:
    """`app;dur=12.5, db;dur=3.1` -> ServerTiming(12.5, 3.1); None when the app's figure is absent.

    Other metrics are ignored; a missing db figure counts as no database time.
    """
    if not value:
        return None
    exact = _APP_FORMAT.match(value)
    if exact:
        app, db = float(exact.group(1)), float(exact.group(2))
        return ServerTiming(app, min(db, app))
    durations: dict[str, float] = {}
    for entry in value.split(","):
        match = _METRIC.match(entry)
        if not match:
            continue
        duration = _DUR.search(match.group(2))
        if duration:
            durations.setdefault(match.group(1).lower(), float(duration.group(1)))
    if "app" not in durations:
        return None
    return ServerTiming(durations["app"], min(durations.get("db", 0.0), durations["app"]))


class Split(NamedTuple):
    """One answer's time, in milliseconds, by where it went (network + queue + server = total).

    A NamedTuple, not a dataclass: one is made per gateway log line, and this is the cheapest.
    """

    total_ms: float
    network_ms: float
    queue_ms: float
    server_ms: float
    app_ms: float
    db_ms: float

    def value(self, component: Component) -> float:
        return float(self[_INDEX[component]])


_INDEX = {Component.TOTAL: 0, Component.NETWORK: 1, Component.QUEUE: 2, Component.SERVER: 3,
          Component.APP: 4, Component.DB: 5}


def split(total_ms: float, timing: ServerTiming | None, queue_ms: float = 0.0) -> Split:
    """Attribute `total_ms`; with no Server-Timing the server's share is unknown, so all of it that
    is not queue counts as network (the app always sends the header: only an answer from something
    else, e.g. the gateway's own 503, has none)."""
    total = max(float(total_ms), 0.0)
    queue = min(max(float(queue_ms), 0.0), total)
    server = min(timing.app_ms, total - queue) if timing else 0.0
    db = min(timing.db_ms, server) if timing else 0.0
    return Split(total_ms=total, network_ms=total - queue - server, queue_ms=queue, server_ms=server,
                 app_ms=server - db, db_ms=db)
