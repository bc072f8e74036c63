"""The alert rules pass `promtool check rules` and `promtool test rules`; a real Prometheus on
127.0.0.1 scrapes the monitoring metrics and evaluates the rules against them."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.exposition import MetricsHandler

from monitoring.metrics import MonitoringMetrics
from monitoring.probes import ProbeFailure, ProbeResult, ProbeStep
from monitoring.rollups import RollupStore
from tenant_app.devserver import free_port

RULES = Path(__file__).parents[3] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(not PROMTOOL or not PROMETHEUS, reason="Debian's prometheus is not installed")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, check=False,
                          cwd=RULES)


def test_the_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", "countycloud.rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = _promtool("test", "rules", "countycloud.rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # the shipped scrape configuration: the service's /metrics and these rules
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0 and "SUCCESS: 6 rules found" in config.stdout, config.stdout + config.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text((RULES / "countycloud.rules.yml").read_text().replace("== 0\n", "== = 0\n", 1))
    assert _promtool("check", "rules", str(broken)).returncode != 0


@pytest.fixture
def exporter() -> Iterator[tuple[MonitoringMetrics, int]]:
    metrics = MonitoringMetrics(RollupStore())
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(metrics.registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield metrics, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(90)
def test_a_real_prometheus_scrapes_the_metrics_and_raises_county_down(
        exporter: tuple[MonitoringMetrics, int], tmp_path: Path) -> None:
    metrics, port = exporter
    metrics.record_probes([ProbeResult("keelung", time.time(), 1500, (), ProbeFailure.COUNTY_DOWN,
                                       ProbeStep.LOG_IN, "down")])
    # The rule as shipped, with its `for` shortened so the test need not wait two minutes.
    rules = (RULES / "countycloud.rules.yml").read_text().replace("for: 2m", "for: 0s", 1)
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n  - job_name: countycloud\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    web = free_port()
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'db'}", f"--web.listen-address=127.0.0.1:{web}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        alerts: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                answer = httpx.get(f"http://127.0.0.1:{web}/api/v1/alerts", timeout=2).json()
            except httpx.HTTPError:
                continue
            alerts = [a for a in answer["data"]["alerts"] if a["state"] == "firing"]
            if alerts:
                break
        firing = [(a["labels"]["alertname"], a["labels"]["county"]) for a in alerts]
        assert firing == [("CountyDown", "keelung")]
        query = {"query": 'up{job="countycloud"}'}
        up = httpx.get(f"http://127.0.0.1:{web}/api/v1/query", params=query).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        process.terminate()
        process.wait(15)
