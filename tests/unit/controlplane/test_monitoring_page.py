"""The county's monitoring page over 30 days of made-up hourly rollups: the stacked chart (one bar
per hour, its parts in order, the slow hour the tallest), the last hour's table, a county user kept
to its own county, and advice applied through the use-case layer with the before figures kept."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controlplane import monitor
from inventory.db import session_scope
from inventory.jobs import Job, JobKind
from monitoring import storage
from monitoring.advice import Facts, Measure
from monitoring.rollups import HOUR_S, Rollup, RollupKey, hour_of
from monitoring.rum import Sample
from monitoring.timings import ServerTiming, Source, split
from monitoring.transactions import Transaction
from tests.support.monitoring_seed import seed_rollups
from tests.unit.controlplane.service_support import OTHER, OWN, Service, make_service, sign_in


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Service]:
    yield from make_service(db_url, tmp_path / "state")


def bar_heights(html: str) -> dict[float, float]:
    """x offset from the first bar -> the bar's whole height, from the four stacked paths (each
    component's sub-paths in bar order: network, queue, app, db)."""
    paths = dict(re.findall(r'<path class="(network|queue|app|db)" fill="#\w+" d="([^"]*)"', html))
    assert list(paths) == ["network", "queue", "app", "db"]
    per = [re.findall(r"M([\d.]+) [\d.]+h[\d.]+v([\d.]+)h-[\d.]+z", paths[c]) for c in paths]
    xs = [float(x) for x, _ in per[0]]
    slot = (xs[-1] - xs[0]) / (len(xs) - 1)  # every hour of the window has a bar here
    return {round((x - xs[0]) / slot) * HOUR_S: sum(float(p[i][1]) for p in per) for i, x in enumerate(xs)}


def test_thirty_days_of_hourly_bars_with_the_slow_hour_tallest(service: Service) -> None:
    now = time.time()
    slow = hour_of(now) - 50 * HOUR_S
    seed_rollups(service.engine, OWN, days=30, now=now, slow_hour=slow)
    client = TestClient(service.app)
    sign_in(client, "liaison")
    page = client.get(f"/tenants/{OWN}/monitoring?days=30&transaction=certify")
    assert page.status_code == 200
    heights = bar_heights(page.text)
    assert len(heights) == 30 * 24  # the window's hours (the current one included)
    assert max(heights, key=heights.__getitem__) == slow - (hour_of(now) + HOUR_S - 30 * 24 * HOUR_S)
    assert 'class="p95"' in page.text
    assert re.search(r'id="last-hour".*簽證', page.text, re.S)
    # one day by default; the county user may not see another county's page
    day = client.get(f"/tenants/{OWN}/monitoring").text
    assert len(bar_heights(day)) == 24 and len(re.findall(r'<rect class="hour" data-hour="\d+"', day)) == 24
    assert client.get(f"/tenants/{OTHER}/monitoring").status_code == 403


def test_applying_advice_runs_the_resize_and_keeps_the_before_figures(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    seed_rollups(service.engine, OWN, days=8, now=now)
    running = monitor.Monitor(service.engine, platform=None, sites=[], gateway=None)  # type: ignore[arg-type]
    monkeypatch.setattr(monitor, "_current", running)
    vm = f"{OWN}-accounting-1"
    # 簽證's server time doubled in the last hour, and the VM's CPU above 80 % for the last 10 min
    monkeypatch.setattr(running.engine, "facts", lambda county, name, vcpus, memory: _busy(
        county, name, vcpus, memory, now))
    client = TestClient(service.app)
    sign_in(client, "central")
    page = client.get(f"/tenants/{OWN}/monitoring")
    assert "add one vCPU" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    applied = client.post(f"/tenants/{OWN}/advice/apply", data={"csrf": csrf.group(1), "vm": vm,
                                                                "rule": "certify-slow-cpu-busy"},
                          follow_redirects=False)
    assert applied.status_code == 303 and applied.headers["location"].startswith("/jobs/")
    with session_scope(service.engine) as session:
        job = session.get(Job, applied.headers["location"][len("/jobs/"):])
        assert job is not None and job.kind is JobKind.RESIZE
        assert job.args["vm"] == vm and job.args["vcpus"] == 2
    [kept] = storage.applied(service.engine, OWN)
    assert kept["before"] and kept["after"] is None and kept["job_id"] == applied.headers["location"][6:]
    # an hour later the periodic upkeep records the hour after, beside the before
    monkeypatch.setattr(running.engine, "clock", lambda: now + 2 * HOUR_S)
    assert running.record_after() == 1
    assert storage.applied(service.engine, OWN)[0]["after"] is not None
    # a role without resize sees the advice but may not apply it
    sign_in(client, "auditor")
    watched = client.get(f"/tenants/{OWN}/monitoring")
    assert "add one vCPU" in watched.text and "/advice/apply" in watched.text
    assert ">Apply<" not in watched.text and ">套用<" not in watched.text
    auditor_csrf = re.search(r'name="csrf" value="([^"]+)"', watched.text)
    assert auditor_csrf is not None
    assert client.post(f"/tenants/{OWN}/advice/apply", data={
        "csrf": auditor_csrf.group(1), "vm": vm, "rule": "certify-slow-cpu-busy"}).status_code == 403
    assert len(storage.applied(service.engine, OWN)) == 1
    sign_in(client, "central")
    fresh = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/tenants/{OWN}/monitoring").text)
    assert fresh is not None
    # advice that does not hold is refused
    refused = client.post(f"/tenants/{OWN}/advice/apply",
                          data={"csrf": fresh.group(1), "vm": vm, "rule": "nope"})
    assert refused.status_code == 422 and "no longer holds" in refused.text


def _busy(county: str, vm: str, vcpus: int, memory: int, now: float) -> Facts:
    cpu = [(now - 700 + 30 * i, 95.0) for i in range(24)]
    return Facts(county, vm, vcpus, memory, {Transaction.CERTIFY: 2.5}, {Measure.VM_CPU_PCT: cpu})


def test_a_chart_is_drawn_again_when_its_rows_change_within_the_hour(service: Service) -> None:
    """The drawn chart is reused only for the very same rows: an answer flushed into the current
    hour (what every probe round does) shows on the next view of the page."""
    now = time.time()
    seed_rollups(service.engine, OWN, days=2, now=now)
    client = TestClient(service.app)
    sign_in(client, "liaison")
    url = f"/tenants/{OWN}/monitoring?days=2&transaction=certify"
    first, again = client.get(url).text, client.get(url).text
    assert bar_heights(first) == bar_heights(again)
    current = hour_of(now) - (hour_of(now) + HOUR_S - 2 * 24 * HOUR_S)  # the current hour's offset
    # ten much slower 簽證 answers merged into the current hour (4 there): its bar, the medians,
    # grows against the hour before (the axis may change with it)
    slow = Rollup()
    for _ in range(10):
        slow.add(Sample(OWN, Transaction.CERTIFY, now, 200, split(900.0, ServerTiming(800.0, 300.0), 1.0)))
    key = RollupKey(OWN, Transaction.CERTIFY, Source.REAL_USER, hour_of(now))
    storage.flush(service.engine, {key: slow}, [])
    before, later = bar_heights(first), bar_heights(client.get(url).text)
    assert later[current] / later[current - HOUR_S] > 5 * before[current] / before[current - HOUR_S]
