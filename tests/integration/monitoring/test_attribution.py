"""200 ms injected on the network side, and separately on the server side, each attributed to the
right side within 10 ms, by the probe (curl - Server-Timing) and by the gateway's real-user log.

Each county is asked the same cheap request (open a budget line) through the real HAProxy; medians
over a bounded number of requests are compared with the undelayed county's, served by the same app.
"""

from __future__ import annotations

import statistics
import time

import pytest

from monitoring.edge import CurlClient
from monitoring.rum import ParseStats, parse_lines
from monitoring.timings import Split
from monitoring.transactions import Transaction

from .conftest import INJECTED_MS, Platform

REQUESTS = 15
TOLERANCE_MS = 10.0


def _timed(platform: Platform, county: str) -> list[Split]:
    from monitoring.probes import _Run  # the probe's own request path: same split as a probe run

    target = platform.target(county)
    with CurlClient(target.base_url) as client:
        run = _Run(target, client, 15.0)
        for _ in range(REQUESTS + 2):
            run.call("GET", f"/api/v1/budget-lines/{target.account.budget_line_id}", bearer=True)
    return [r.timing for r in run.requests[2:]]  # the first two warm the connection and caches


def _median(splits: list[Split], part: str) -> float:
    return statistics.median(getattr(s, f"{part}_ms") for s in splits)


@pytest.mark.timeout(180)
def test_injected_delay_is_attributed_to_the_right_side(platform: Platform) -> None:
    platform.rum.take()
    probe = {county: _timed(platform, county) for county in ("base", "slownet", "slowapp")}
    base_net, base_srv = _median(probe["base"], "network"), _median(probe["slownet"], "server")
    errors = {
        "probe network delay -> network": abs(_median(probe["slownet"], "network") - base_net - INJECTED_MS),
        "probe network delay -> not server": abs(_median(probe["slownet"], "server")
                                                 - _median(probe["base"], "server")),
        "probe server delay -> server": abs(_median(probe["slowapp"], "server")
                                            - _median(probe["base"], "server") - INJECTED_MS),
        "probe server delay -> not network": abs(_median(probe["slowapp"], "network") - base_net),
    }
    del base_srv

    # The same requests as the gateway logged them.
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline and len(lines) < 3 * (REQUESTS + 2):
        time.sleep(0.1)
        lines += platform.rum.take()
    stats = ParseStats()
    rum: dict[str, list[Split]] = {"base": [], "slownet": [], "slowapp": []}
    for sample in parse_lines(lines, stats):
        if sample.transaction is Transaction.BUDGET_LINE:
            rum[sample.county].append(sample.timing)
    assert all(len(v) == REQUESTS + 2 for v in rum.values()), ({k: len(v) for k, v in rum.items()}, stats,
                                                               lines[:3], lines[-3:])
    rum = {k: v[2:] for k, v in rum.items()}
    errors.update({
        "rum network delay -> network": abs(_median(rum["slownet"], "network")
                                            - _median(rum["base"], "network") - INJECTED_MS),
        "rum network delay -> not server": abs(_median(rum["slownet"], "server") - _median(rum["base"], "server")),
        "rum server delay -> server": abs(_median(rum["slowapp"], "server")
                                          - _median(rum["base"], "server") - INJECTED_MS),
        "rum server delay -> not network": abs(_median(rum["slowapp"], "network") - _median(rum["base"], "network")),
    })
    print({k: round(v, 2) for k, v in errors.items()})
    assert max(errors.values()) <= TOLERANCE_MS, errors
