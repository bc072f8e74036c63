"""`countycloud serve` runs the monitoring: the real service process probes every serving county on
its schedule (2 s here), reads the gateway's request log, flushes into the platform database and
serves /metrics. A county down fails its own probe fast and keelung's probe still passes; a county
without probe credentials is counted, not probed; a malformed log line is counted and skipped; a
scraper stuck mid-request (Prometheus hung) blocks nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inventory.db import make_engine, migrate, session_scope
from inventory.declare import apply
from inventory.enums import Lifecycle
from inventory.loader import load_sample
from inventory.ports import PortRange, PortRanges
from inventory.queries import get_tenant
from monitoring import storage
from monitoring.timings import Source
from provisioning import probe_accounts
from provisioning.haproxy import GatewayPaths
from tenant_app.devserver import free_port
from tests.support.stand_in_ring import StandInRing

from .conftest import Seeded
from .support import app_server

REPO = Path(__file__).resolve().parents[3]
PORTS = PortRanges(guest=PortRange(24250, 24299, "guest ports"),
                   gateway=PortRange(24200, 24249, "gateway ports"))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane", *args], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=False)


def _inventory(state: Path, active: dict[str, int]) -> str:
    """The sample inventory with `active` counties serving at the given ports (as after provision)."""
    url = f"sqlite:///{state / 'countycloud.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        apply(session, load_sample(), actor="test", ports=PORTS)
        for slug, port in active.items():
            tenant = get_tenant(session, slug)
            tenant.status, tenant.gateway_port = Lifecycle.ACTIVE, port
    engine.dispose()
    return url


@pytest.fixture
def service(seeded: Seeded, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    down_port = free_port()  # nothing listens here: taichung is down
    with app_server(seeded.copy(tmp_path, "keelung")) as keelung_port:
        url = _inventory(tmp_path, {"keelung": keelung_port, "taichung": down_port, "penghu": free_port()})
        account = seeded.account
        kept = probe_accounts.ProbeCredentials(account.username, account.password, account.api_token, 1,
                                               account.budget_line_id)
        probe_accounts.save(tmp_path, "keelung", kept)
        probe_accounts.save(tmp_path, "taichung", kept)  # penghu: none kept
        port = free_port()
        env = {**os.environ, "COUNTYCLOUD_STATE_DIR": str(tmp_path), "COUNTYCLOUD_SERVICE_PORT": str(port),
               "COUNTYCLOUD_SERVICE_OPERATIONS": "tests.support.fake_service_operations",
               "COUNTYCLOUD_MONITORING_PROBE_INTERVAL_S": "2", "PYTHONPATH": str(REPO),
               # Backups are not this test's: with them on, the metrics' refresh of the active
               # counties started the secondary's REST server on the platform's default port, and
               # that server (a site's daemon) outlived the test.
               "COUNTYCLOUD_BACKUP_SCHEDULE": "false"}
        started = _cli(env, "serve", "--background")
        assert started.returncode == 0, started.stderr + started.stdout
        try:
            yield f"http://127.0.0.1:{port}", url, tmp_path
        finally:
            _cli(env, "serve", "--stop")


def _metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == want:
            return float(match.group(2))
    return None


@pytest.mark.timeout(240)
def test_the_service_probes_reads_the_gateway_log_stores_and_exposes(service: tuple[str, str, Path]) -> None:
    base, url, state = service
    # A scraper stuck half-way through its request (Prometheus hung, or gone without closing):
    # nothing in the service waits for it.
    stuck = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    stuck.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics", timeout=5).text
        if _metric(text, "countycloud_probe_success", county="keelung") == 1.0 and \
                _metric(text, "countycloud_probe_success", county="taichung") == 0.0:
            break
        time.sleep(0.5)
    assert _metric(text, "countycloud_probe_success", county="keelung") == 1.0, text[-3000:]
    assert _metric(text, "countycloud_probe_success", county="taichung") == 0.0
    # Down fails fast (connect refused well under the 1.5 s connect timeout); keelung is unaffected.
    taichung_s = _metric(text, "countycloud_probe_duration_seconds", county="taichung")
    assert taichung_s is not None and taichung_s < 1.6
    failures = _metric(text, "countycloud_probe_failures_total", county="taichung", reason="county_down")
    assert failures is not None and failures >= 1
    assert _metric(text, "countycloud_probe_account_missing", county="penghu") == 1.0
    assert _metric(text, "countycloud_probe_success", county="penghu") is None

    # What the gateway's ring would hold: one request line of keelung, one malformed line. The
    # service reads the whole ring every second: it must take each line once.
    line = (f'ccrum2 4242 1 {time.time():.3f} fe_keelung 200 GET "/budget" "" 1 40 45 '
            "{app;dur=38.00, db;dur=20.00}")
    dump = f"{line}\nccrum2 4242 2 garbage\n\n".encode()
    ring = StandInRing(GatewayPaths(state / "haproxy").runtime_socket, lambda: dump)

    engine = make_engine(url)
    try:
        deadline = time.monotonic() + 60
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rows:
            rows = storage.summaries(engine, "keelung", Source.REAL_USER, time.time() - 7200,
                                     time.time() + 3600)
            time.sleep(0.5)
        assert [r["transaction"] for r in rows] == ["budget_lines"] and rows[0]["count"] == 1
        probed = storage.summaries(engine, "keelung", Source.PROBE, time.time() - 7200, time.time() + 3600)
        assert {"log_in", "certify", "report"} <= {str(r["transaction"]) for r in probed}
        assert storage.samples(engine, "keelung", time.time() - 600)  # raw samples kept too
    finally:
        engine.dispose()
    began = time.monotonic()
    text = httpx.get(f"{base}/metrics", timeout=5).text
    assert time.monotonic() - began < 2.0  # the stuck scraper holds nothing
    assert _metric(text, "countycloud_rum_lines_total", outcome="malformed") == 1.0
    # Read again and again (once a second), each line counted once.
    answered = ring.answered
    deadline = time.monotonic() + 15
    while ring.answered < answered + 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ring.answered >= answered + 3
    text = httpx.get(f"{base}/metrics", timeout=5).text
    assert _metric(text, "countycloud_rum_lines_total", outcome="malformed") == 1.0
    assert _metric(text, "countycloud_rum_lines_total", outcome="sample") == 1.0
    ring.close()
    stuck.close()
