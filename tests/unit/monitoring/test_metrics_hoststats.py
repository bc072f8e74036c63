from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from monitoring.edge import HostReading, Phases
from monitoring.hoststats import host_usage, vm_counters, vm_usage, vm_usages
from monitoring.metrics import MonitoringMetrics
from monitoring.probes import ProbeFailure, ProbeResult, ProbeStep, Request
from monitoring.rollups import RollupStore
from monitoring.rum import Sample
from monitoring.timings import ServerTiming, split
from monitoring.transactions import Transaction

NOW = 1_796_400_000.0


def _values(metrics: MonitoringMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_quantiles_probes_and_usage_are_exposed() -> None:
    store = RollupStore()
    for i in range(100):
        store.add(Sample("keelung", Transaction.CERTIFY, NOW - 100 + i, 201,
                         split(50 + i, ServerTiming(20, 5))))
    metrics = MonitoringMetrics(store, clock=lambda: NOW)
    phases = Phases(0, 0.1, 0, 40, 1, 41)
    metrics.record_probes([
        ProbeResult("keelung", NOW, 900.0, (Request(ProbeStep.LOG_IN, "GET", "/login", Transaction.LOG_IN,
                                                     200, phases, split(41, ServerTiming(20, 0))),)),
        ProbeResult("penghu", NOW, 1500.0, (), ProbeFailure.COUNTY_DOWN, ProbeStep.LOG_IN, "down"),
    ])
    metrics.record_host(host_usage("primary", HostReading(37.5, 2, 100, 25, 200, 50, 0, 0, 0.5)))
    values = _values(metrics)
    total_p99 = values[("countycloud_transaction_seconds", (
        ("component", "total"), ("county", "keelung"), ("quantile", "0.99"), ("source", "real_user"),
        ("transaction", "certify")))]
    assert abs(total_p99 - 0.149) < 0.149 * 0.02
    assert values[("countycloud_transaction_count", (("county", "keelung"), ("source", "real_user"),
                                                     ("transaction", "certify")))] == 100
    assert values[("countycloud_probe_success", (("county", "keelung"),))] == 1
    assert values[("countycloud_probe_success", (("county", "penghu"),))] == 0
    failures = ("countycloud_probe_failures_total", (("county", "penghu"), ("reason", "county_down")))
    assert values[failures] == 1
    assert values[("countycloud_host_memory_used_percent", (("site", "primary"),))] == 75.0
    # An hour later nothing recent: the window moves on.
    later = _values(MonitoringMetrics(store, clock=lambda: NOW + 3 * 3600))
    assert not any(name == "countycloud_transaction_count" for name, _ in later)


def test_vm_rates_between_two_readings() -> None:
    before = vm_counters({"cpu.time": 10e9, "vcpu.current": 2, "balloon.current": 786432,
                          "balloon.maximum": 1048576, "net.0.rx.bytes": 1000, "net.0.tx.bytes": 500,
                          "block.0.rd.bytes": 0, "block.1.wr.bytes": 4096}, at=100.0)
    after = vm_counters({"cpu.time": 13e9, "vcpu.current": 2, "balloon.current": 786432,
                         "balloon.maximum": 1048576, "net.0.rx.bytes": 3000, "net.0.tx.bytes": 1500,
                         "block.0.rd.bytes": 8192, "block.1.wr.bytes": 4096}, at=102.0)
    usage = vm_usage("primary", "keelung-1", before, after)
    assert usage.cpu_pct == 75.0  # 3 s of CPU in 2 s over 2 vCPUs
    assert usage.memory_mib == 768 and usage.memory_max_mib == 1024
    assert usage.net_bytes_per_s == 1500 and usage.disk_bytes_per_s == 4096
    assert [u.vm for u in vm_usages("primary", {"a": before}, {"a": after, "new": after})] == ["a"]
