from __future__ import annotations

import threading
from pathlib import Path

from monitoring.engine import MonitoringEngine
from monitoring.rum import Skip
from monitoring.timings import Source
from provisioning.hypervisor import Hypervisor

NOW = 1_796_400_000.0


def line(at: float, path: str = "/api/v1/certifications", status: int = 201, county: str = "keelung") -> str:
    return (f'ccrum2 4242 7 {at:.3f} fe_{county} {status} POST "{path}" "" 1 40 45 '
            "{app;dur=38.00, db;dur=20.00}")


def test_gateway_lines_become_chart_rows_and_survive_a_restart(tmp_path: Path) -> None:
    file = tmp_path / "rollups.json"
    engine = MonitoringEngine(file, clock=lambda: NOW)
    assert engine.ingest_gateway_lines([line(NOW - 10), line(NOW - 5), "junk", line(NOW - 4000)]) == 3
    assert engine.rum_stats.skipped[Skip.FOREIGN] == 1
    rows = engine.chart("keelung", NOW - 2 * 3600, NOW + 1)
    assert [(r["transaction"], r["count"]) for r in rows] == [("certify", 1), ("certify", 2)]
    db = rows[1]["ms"]["db"]
    assert db["p95"] == db["p50"] and abs(db["p95"] - 20) < 0.5
    assert engine.chart("keelung", NOW - 3600, NOW + 1, source=Source.PROBE) == []
    engine.save()
    again = MonitoringEngine(file, clock=lambda: NOW)
    assert again.chart("keelung", NOW - 2 * 3600, NOW + 1) == rows
    exposition = again.metrics.exposition().decode()
    count = 'countycloud_transaction_count{county="keelung",source="real_user",transaction="certify"} 2.0'
    assert count in exposition


def test_ingest_and_scrape_at_once_do_not_trip_over_each_other() -> None:
    engine = MonitoringEngine(clock=lambda: NOW)
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            for _ in range(200):
                engine.metrics.exposition()
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=scrape)
    thread.start()
    for i in range(300):
        engine.ingest_gateway_lines([line(NOW - i, county=f"c{i % 13}")])
    thread.join()
    assert not errors
    assert sum(r.count for r in engine.store.rollups.values()) == 300


def test_vm_usage_from_a_real_libvirt_connection_and_site_down() -> None:
    engine = MonitoringEngine(clock=lambda: NOW)
    with Hypervisor("primary", "test:///default") as hypervisor:  # libvirt's own test driver
        engine.record_vms("primary", hypervisor)
        engine.record_vms("primary", hypervisor)
    engine.record_vms("dr", None)
    text = engine.metrics.exposition().decode()
    assert 'countycloud_site_up{site="primary"} 1.0' in text
    assert 'countycloud_site_up{site="dr"} 0.0' in text
    assert 'countycloud_vm_vcpus{site="primary",vm="test"} 2.0' in text
    assert engine.vm_series["test"]
