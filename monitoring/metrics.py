"""prometheus-client collectors on a registry of their own, which the service mounts at /metrics.

The quantiles are computed here from the sketches (the last hour merged per county, transaction
and component), not by Prometheus from buckets: DDSketch's quantiles are what the console shows,
and exposing the same figures keeps the alert rules and the console in agreement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitoring.hoststats import HostUsage, VmUsage
from monitoring.probes import ProbeResult
from monitoring.rollups import HOUR_S, QUANTILES, RollupStore, hour_of
from monitoring.rum import ParseStats
from monitoring.timings import Component


class RollupCollector(Collector):
    """countycloud_transaction_seconds{county,transaction,source,component,quantile} and the count,
    over the trailing window (default: the last hour), read from the store at scrape time."""

    def __init__(self, store: RollupStore, window_s: float = HOUR_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.window_s = window_s
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        quantiles = GaugeMetricFamily(
            "countycloud_transaction_seconds", "Answer time per county and transaction over the last hour, "
            "by component (total, network, queue, server, app, db), from DDSketch",
            labels=["county", "transaction", "source", "component", "quantile"])
        counts = GaugeMetricFamily("countycloud_transaction_count", "Answers over the last hour",
                                   labels=["county", "transaction", "source"])
        failures = GaugeMetricFamily("countycloud_transaction_failures",
                                     "Failed answers (5xx) over the last hour",
                                     labels=["county", "transaction", "source"])
        merged = self.store.merged(hour_of(self.clock() - self.window_s),
                                   lambda k: (k.county, k.transaction.value, k.source.value))
        for group, rollup in sorted(merged.items(), key=lambda item: str(item[0])):
            labels = [str(part) for part in group] if isinstance(group, tuple) else [str(group)]
            counts.add_metric(labels, rollup.count)
            failures.add_metric(labels, rollup.failures)
            for component in Component:
                for q in QUANTILES:
                    value = rollup.quantile(component, q)
                    if value is not None:
                        quantiles.add_metric([*labels, component.value, str(q)], value / 1000)
        yield quantiles
        yield counts
        yield failures


class MonitoringMetrics:
    def __init__(self, store: RollupStore, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(RollupCollector(store, clock=clock))
        r = self.registry
        site, vm = ["site"], ["site", "vm"]
        self.probe_up = Gauge("countycloud_probe_success", "1 if the county's last probe passed", ["county"],
                              registry=r)
        self.probe_seconds = Gauge("countycloud_probe_duration_seconds", "The last probe's whole walk",
                                   ["county"], registry=r)
        self.probe_last = Gauge("countycloud_probe_last_run_timestamp_seconds", "When the last probe ran",
                                ["county"], registry=r)
        self.probe_failures = Counter("countycloud_probe_failures", "Failed probes by reason",
                                      ["county", "reason"], registry=r)
        self.probe_unprobed = Gauge("countycloud_probe_account_missing",
                                    "1 for a serving county the platform keeps no probe account for",
                                    ["county"], registry=r)
        self.rum_lines = Counter("countycloud_rum_lines", "Gateway log lines read, by outcome", ["outcome"],
                                 registry=r)
        self.rum_gaps = Counter("countycloud_rum_gaps", "Reads of the gateway's ring that found lines "
                                "lost since the previous read, by why", ["why"], registry=r)
        self.site_up = Gauge("countycloud_site_up", "1 if the site's hypervisor answers", site, registry=r)
        self.host_cpu = Gauge("countycloud_host_cpu_percent", "Host CPU use (all cores)", site, registry=r)
        self.host_memory = Gauge("countycloud_host_memory_used_percent", "Host memory in use", site,
                                 registry=r)
        self.host_disk = Gauge("countycloud_host_disk_used_percent", "Host disk in use", site, registry=r)
        self.vm_cpu = Gauge("countycloud_vm_cpu_percent", "VM CPU use, of its own vCPUs", vm, registry=r)
        self.vm_vcpus = Gauge("countycloud_vm_vcpus", "VM vCPUs", vm, registry=r)
        self.vm_memory = Gauge("countycloud_vm_memory_bytes", "Memory the balloon leaves the VM", vm,
                               registry=r)
        self.vm_net = Gauge("countycloud_vm_network_bytes_per_second", "VM network, in + out", vm, registry=r)
        self.vm_disk = Gauge("countycloud_vm_disk_bytes_per_second", "VM disk, read + written", vm,
                             registry=r)

    def record_probes(self, results: Iterable[ProbeResult]) -> None:
        for result in results:
            self.probe_up.labels(result.county).set(1 if result.ok else 0)
            self.probe_seconds.labels(result.county).set(result.elapsed_ms / 1000)
            self.probe_last.labels(result.county).set(result.started_at)
            if result.failure is not None:
                self.probe_failures.labels(result.county, result.failure.value).inc()

    def record_unprobed(self, counties: Iterable[str]) -> None:
        self.probe_unprobed.clear()
        for county in counties:
            self.probe_unprobed.labels(county).set(1)

    def record_rum(self, before: ParseStats, after: ParseStats) -> None:
        self.rum_lines.labels("sample").inc(after.samples - before.samples)
        for reason, n in after.skipped.items():
            self.rum_lines.labels(reason.value).inc(n - before.skipped[reason])
        for gap, n in after.gaps.items():
            self.rum_gaps.labels(gap.value).inc(n - before.gaps[gap])

    def record_site(self, site: str, up: bool) -> None:
        self.site_up.labels(site).set(1 if up else 0)

    def record_host(self, usage: HostUsage) -> None:
        self.host_cpu.labels(usage.site).set(usage.cpu_pct)
        self.host_memory.labels(usage.site).set(usage.memory_used_pct)
        self.host_disk.labels(usage.site).set(usage.disk_used_pct)

    def record_vms(self, usages: Sequence[VmUsage]) -> None:
        for u in usages:
            self.vm_cpu.labels(u.site, u.vm).set(u.cpu_pct)
            self.vm_vcpus.labels(u.site, u.vm).set(u.vcpus)
            self.vm_memory.labels(u.site, u.vm).set(u.memory_mib * 1024 * 1024)
            self.vm_net.labels(u.site, u.vm).set(u.net_bytes_per_s)
            self.vm_disk.labels(u.site, u.vm).set(u.disk_bytes_per_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
