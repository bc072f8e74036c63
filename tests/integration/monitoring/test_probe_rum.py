"""A whole probe run through the real gateway; the gateway's own log lines for it, parsed; the
faults: a county down, the probe user locked out, malformed lines in the log."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from monitoring.probes import ProbeFailure, ProbeSessions, ProbeStep, Target, probe_all, probe_county
from monitoring.rollups import RollupStore
from monitoring.rum import ParseStats, Skip, parse_lines
from monitoring.timings import Source
from monitoring.transactions import Transaction
from provisioning.gateway import Backend, Frontend
from provisioning.haproxy import ServerState
from tenant_app.devserver import free_port

from .conftest import Platform, Seeded
from .support import app_server


def _collect(platform: Platform, at_least: int, timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline and len(lines) < at_least:
        time.sleep(0.1)
        lines += platform.rum.take()
    return lines


@pytest.mark.timeout(120)
def test_a_probe_walks_the_county_and_the_gateway_logs_every_request(platform: Platform) -> None:
    platform.rum.take()
    result = probe_county(platform.target("base"))
    assert result.ok, result.message
    assert [r.step for r in result.requests] == [
        ProbeStep.LOG_IN, ProbeStep.LOG_IN, ProbeStep.BUDGET_LINES, ProbeStep.BUDGET_LINE, ProbeStep.CERTIFY,
        ProbeStep.CERTIFY, ProbeStep.REPORT, ProbeStep.EXPORT, ProbeStep.LOG_OUT]
    certify = next(r for r in result.requests if r.transaction is Transaction.CERTIFY)
    assert certify.status == 422  # refused at the balance check: the probe wrote nothing
    for request in result.requests:
        t = request.timing
        assert t.server_ms > 0, request  # every answer came from the app, with its Server-Timing
        assert t.network_ms + t.server_ms == pytest.approx(request.phases.total_ms)
        assert request.phases.total_ms >= request.phases.first_byte_ms

    lines = _collect(platform, at_least=len(result.requests))
    # Real lines from the real HAProxy, with broken ones mixed in the way a line cut short or a
    # foreign writer would leave them.
    broken = [lines[0][: len(lines[0]) // 2], "ccrum2 not a request line", "", "Proxy fe_x started."]
    stats = ParseStats()
    samples = list(parse_lines([*broken[:2], *lines, *broken[2:]], stats))
    assert stats.lines == len(lines) + 4
    assert stats.skipped[Skip.MALFORMED] == 2 and stats.skipped[Skip.FOREIGN] == 2
    assert [(s.county, s.transaction, s.status) for s in samples] == [
        ("base", r.transaction, r.status) for r in result.requests]
    for sample, request in zip(samples, result.requests, strict=True):
        assert sample.source is Source.REAL_USER
        assert abs(sample.at - result.started_at) < 60
        # The gateway saw the same app time the probe did (both read the same Server-Timing).
        assert sample.timing.server_ms == pytest.approx(request.timing.server_ms)
        assert sample.timing.total_ms >= sample.timing.server_ms

    store = RollupStore()
    store.extend(result.samples())
    store.extend(samples)
    assert store.combined(county="base", source=Source.PROBE).count == len(result.requests)
    assert store.combined(county="base", transaction=Transaction.EXPORT, source=Source.REAL_USER).count == 1


@pytest.mark.timeout(60)
def test_a_county_down_fails_fast_and_slows_no_other(platform: Platform) -> None:
    dead = Target("dead", f"http://127.0.0.1:{free_port()}", platform.account)  # nothing listens
    alone = probe_county(platform.target("base"))
    with ThreadPoolExecutor(4) as executor:
        began = time.monotonic()
        down, up = probe_all([dead, platform.target("base")], executor)
        both_s = time.monotonic() - began
    assert down.failure is ProbeFailure.COUNTY_DOWN and down.failed_step is ProbeStep.LOG_IN
    assert "county down" in down.message
    assert down.elapsed_ms < 2000
    assert up.ok and alone.ok
    assert both_s * 1000 < max(alone.elapsed_ms, 2000) * 1.5 + 500


@pytest.mark.timeout(90)
def test_a_county_whose_vm_is_gone_fails_fast_through_the_gateway(platform: Platform) -> None:
    gone = free_port()  # the VM's forward: nothing listens any more
    frontends = [Frontend(c, p, (Backend(f"{c}-vm", platform.app_ports[c]),))
                 for c, p in platform.addresses.items()]
    address = free_port()
    platform.gateway.apply([*frontends, Frontend("gone", address, (Backend("gone-vm", gone),))])
    platform.gateway.wait_for("gone", "gone-vm", ServerState.DOWN, timeout=30)
    result = probe_county(Target("gone", f"http://127.0.0.1:{address}", platform.account))
    assert result.failure is ProbeFailure.COUNTY_DOWN
    assert result.requests[0].status == 503 and result.elapsed_ms < 2000
    platform.gateway.apply(frontends)


@pytest.mark.timeout(120)
def test_the_probe_user_locked_out_is_a_clear_probe_failure(seeded: Seeded, tmp_path: Path) -> None:
    with app_server(seeded.copy(tmp_path, "locked")) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as client:  # someone keeps trying the probe's name
            for _ in range(6):
                page = client.get("/login").text
                token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
                client.post("/login", data={"username": seeded.account.username, "password": "wrong",
                                            "csrf_token": token})
        result = probe_county(Target("locked", base, seeded.account))
    assert result.failure is ProbeFailure.LOCKED_OUT
    assert result.failed_step is ProbeStep.LOG_IN
    assert "locked out" in result.message


def test_kept_sessions_log_in_once_per_cycle_and_recover_an_ended_session(platform: Platform) -> None:
    sessions = ProbeSessions(every=3)
    target = platform.target("base")
    try:
        runs = [sessions.run(target) for _ in range(4)]
        assert all(r.ok for r in runs), [r.message for r in runs]
        steps = [[req.step for req in r.requests] for r in runs]
        assert [ProbeStep.LOG_IN in s for s in steps] == [True, False, False, True]
        assert [ProbeStep.LOG_OUT in s for s in steps] == [False, False, True, False]
        # every run still walks the budget lines, 簽證, the report and its export
        for s in steps:
            assert {ProbeStep.BUDGET_LINES, ProbeStep.CERTIFY, ProbeStep.REPORT, ProbeStep.EXPORT} <= set(s)
        # the session ends behind the probe's back (the app restarted, it expired): it logs in again
        client, _ = sessions._clients["base"]
        page = client.request("GET", "/budget")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.body.decode())
        assert token is not None
        assert client.request("POST", "/logout", form={"csrf_token": token.group(1)}).status == 303
        again = sessions.run(target)
        assert again.ok and ProbeStep.LOG_IN in [req.step for req in again.requests]
    finally:
        sessions.close()
