"""200 ms injected on the network side, and separately on the server side, each attributed to the
right side within 10 ms, by the probe (curl - Server-Timing) and by the gateway's real-user log.

Each county is asked the same cheap request (open a budget line) through the real HAProxy; medians
over a bounded number of requests are compared with the undelayed county's, served by the same app.
"""

from __future__ import annotations

import time

import pytest

from monitoring.edge import CurlClient
from monitoring.probes import ProbeStep, _Run
from monitoring.rum import ParseStats, parse_lines
from monitoring.timings import Split
from monitoring.transactions import Transaction

from .conftest import INJECTED_MS, Platform
from .support import attribution_errors

REQUESTS = 15
WARM_UP = 2  # the first requests open the connection and warm the app's caches
TOLERANCE_MS = 10.0
COUNTIES = ("base", "slownet", "slowapp")


def timed_requests(platform: Platform, county: str, n: int = REQUESTS + WARM_UP) -> list[Split]:
    """Open the probe's budget line n times through the probe's own request path (same split)."""
    target = platform.target(county)
    with CurlClient(target.base_url) as client:
        run = _Run(target, client, 15.0, step=ProbeStep.BUDGET_LINE)
        for _ in range(n):
            run.call("GET", f"/api/v1/budget-lines/{target.account.budget_line_id}", bearer=True)
    return [r.timing for r in run.requests]


@pytest.mark.timeout(180)
def test_injected_delay_is_attributed_to_the_right_side(platform: Platform) -> None:
    platform.rum.take()
    probe = {county: timed_requests(platform, county)[WARM_UP:] for county in COUNTIES}
    errors = {f"probe {k}": v for k, v in attribution_errors(probe, INJECTED_MS).items()}

    # The same requests as the gateway logged them.
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline and len(lines) < len(COUNTIES) * (REQUESTS + WARM_UP):
        time.sleep(0.1)
        lines += platform.rum.take()
    stats = ParseStats()
    rum: dict[str, list[Split]] = {county: [] for county in COUNTIES}
    for sample in parse_lines(lines, stats):
        if sample.transaction is Transaction.BUDGET_LINE:
            rum[sample.county].append(sample.timing)
    assert {k: len(v) for k, v in rum.items()} == dict.fromkeys(COUNTIES, REQUESTS + WARM_UP), stats
    errors.update({f"rum {k}": v for k, v in
                   attribution_errors({k: v[WARM_UP:] for k, v in rum.items()}, INJECTED_MS).items()})
    print({k: round(v, 2) for k, v in errors.items()})
    assert max(errors.values()) <= TOLERANCE_MS, errors
