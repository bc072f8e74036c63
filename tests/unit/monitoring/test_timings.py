from __future__ import annotations

import pytest

from monitoring.timings import Component, ServerTiming, parse_server_timing, split
from tenant_app.timing import header_value


def test_the_apps_own_header_parses() -> None:
    assert parse_server_timing(header_value(0.0125, 0.0031)) == ServerTiming(12.5, 3.1)


@pytest.mark.parametrize(("value", "expected"), [
    ("app;dur=12.5, db;dur=3.1", ServerTiming(12.5, 3.1)),
    ("db;dur=3, app;desc=\"x\";dur=7", ServerTiming(7.0, 3.0)),
    ("app;dur=5", ServerTiming(5.0, 0.0)),
    ("app;dur=2, db;dur=9", ServerTiming(2.0, 2.0)),  # the database's share never exceeds the whole
    ("cache;dur=1", None),
    ("", None),
    (None, None),
    ("app;dur=abc", None),
])
def test_server_timing_values(value: str | None, expected: ServerTiming | None) -> None:
    assert parse_server_timing(value) == expected


def test_split_adds_up_and_never_goes_negative() -> None:
    s = split(250.0, ServerTiming(40.0, 10.0), queue_ms=5.0)
    assert (s.network_ms, s.queue_ms, s.server_ms, s.app_ms, s.db_ms) == (205.0, 5.0, 40.0, 30.0, 10.0)
    assert s.network_ms + s.queue_ms + s.server_ms == s.total_ms
    assert s.value(Component.DB) == 10.0
    # Rounding at the gateway (whole ms) can make the app's figure exceed the measured total.
    tight = split(3.0, ServerTiming(3.4, 0.2))
    assert tight.network_ms == 0.0 and tight.server_ms == 3.0
    assert split(100.0, None).network_ms == 100.0
