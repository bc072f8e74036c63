"""The monitoring engine in one object; the service wires it in controlplane/monitor.py:

    engine = MonitoringEngine(db=platform_db)
    reader = RequestLogReader(gateway_paths.runtime_socket, gateway_paths.request_log_mark,
                              engine.ingest_ring_read).start()
    every 60 s:  engine.record_probes(probe_all_kept(targets, executor, sessions)); engine.flush()
    every 60 s:  engine.record_host(site, read_host()); engine.record_vms(site, hypervisor); engine.flush()
    hourly:      engine.prune()
    GET /metrics -> engine.metrics.registry (controlplane.metrics)
    console:     storage.chart_bars / summaries; advice.evaluate(engine.facts(...), now)

Without `db` (tests, benches) everything stays in `store`, and `save()` writes a JSON file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from monitoring import edge, storage
from monitoring.advice import BASELINE_S, Facts, Measure, server_p95_ratios
from monitoring.hoststats import HostUsage, VmCounters, VmUsage, host_usage, read_vms, vm_usages
from monitoring.metrics import MonitoringMetrics
from monitoring.probes import ProbeResult
from monitoring.rollups import HOUR_S, RollupStore, hour_of
from monitoring.rum import Gap, ParseStats, RingRead, parse_lines
from monitoring.timings import Source
from monitoring.transactions import TITLES, Transaction
from provisioning.hypervisor import Hypervisor, HypervisorError

VM_SERIES_S = 24 * HOUR_S  # VM usage kept for the advice rules' longest window
RECENT_S = 2 * HOUR_S  # what the in-memory store keeps beside the database (the metrics' last hour)
HISTORY_S = BASELINE_S + 2 * HOUR_S  # the advice rules' baseline week and the hour compared with it


def _keep(series: list[tuple[float, Any]], point: tuple[float, Any]) -> None:
    series.append(point)
    while series and series[0][0] < point[0] - VM_SERIES_S:
        series.pop(0)


class MonitoringEngine:
    """With `db` (the platform database), what arrives goes to `pending` and `flush()` merges it
    into the database (monitoring.storage) and into `store`, which then keeps only the recent hours
    the metrics read; without it, `store` holds everything (and `save()` writes the JSON file)."""

    def __init__(self, rollup_file: Path | None = None, clock: Callable[[], float] = time.time,
                 db: Engine | None = None) -> None:
        self.clock = clock
        self.rollup_file = rollup_file
        self.db = db
        loaded = edge.read_json(rollup_file) if rollup_file else None
        self.store = RollupStore.load(loaded) if isinstance(loaded, dict) else RollupStore()
        self.store.keep_raw = db is None
        self.pending = RollupStore()
        self._sink = self.pending if db is not None else self.store
        self.host_series: dict[str, list[tuple[float, HostUsage]]] = {}  # per site, the last day
        self.vm_usage_series: dict[str, list[tuple[float, VmUsage]]] = {}  # per VM, the last day
        self.metrics = MonitoringMetrics(self.store, clock)
        self.rum_stats = ParseStats()
        self._lock = threading.Lock()
        self._vm_counters: dict[str, dict[str, VmCounters]] = {}
        self.vm_series: dict[str, dict[Measure, list[tuple[float, float]]]] = {}  # per VM name
        self.last_probe: dict[str, ProbeResult] = {}

    # ------------------------------------------------------------------ inputs

    def ingest_ring_read(self, read: RingRead) -> int:
        """RequestLogReader's callback: the lines since its previous read, and whether some were lost."""
        return self.ingest_gateway_lines(read.lines, read.gap)

    def ingest_gateway_lines(self, lines: Sequence[str], gap: Gap | None = None) -> int:
        """Parse, roll up, count what was skipped (and a gap before these lines)."""
        with self._lock:
            before = self.rum_stats.copy()
            if gap is not None:
                self.rum_stats.gaps[gap] += 1
            added = self._sink.extend(parse_lines(lines, self.rum_stats))
            self.metrics.record_rum(before, self.rum_stats)
        return added

    def record_probes(self, results: Iterable[ProbeResult]) -> None:
        results = list(results)
        for result in results:
            self._sink.extend(result.samples())
            self.last_probe[result.county] = result
        self.metrics.record_probes(results)

    def record_host(self, site: str, reading: edge.HostReading) -> None:
        usage = host_usage(site, reading)
        self.metrics.record_host(usage)
        _keep(self.host_series.setdefault(site, []), (self.clock(), usage))

    def record_vms(self, site: str, hypervisor: Hypervisor | None) -> None:
        """VM usage since the previous call; a site whose hypervisor does not answer is down."""
        if hypervisor is None:
            self.metrics.record_site(site, False)
            return
        try:
            now = read_vms(hypervisor, time.monotonic())
        except HypervisorError:
            self.metrics.record_site(site, False)
            return
        self.metrics.record_site(site, True)
        usages = vm_usages(site, self._vm_counters.get(site, {}), now)
        self._vm_counters[site] = now
        self.metrics.record_vms(usages)
        at = self.clock()
        for usage in usages:
            _keep(self.vm_usage_series.setdefault(usage.vm, []), (at, usage))
            series = self.vm_series.setdefault(usage.vm, {})
            series.setdefault(Measure.VM_CPU_PCT, []).append((at, usage.cpu_pct))
            if usage.memory_used_pct is not None:
                series.setdefault(Measure.VM_MEMORY_USED_PCT, []).append((at, usage.memory_used_pct))
            for points in series.values():
                while points and points[0][0] < at - VM_SERIES_S:
                    points.pop(0)

    # ------------------------------------------------------------------ upkeep

    def prune(self) -> None:
        """Retention: in the database (a day of samples, a year of rollups) or in memory."""
        now = self.clock()
        if self.db is not None:
            storage.prune(self.db, now)
            self.store.prune_before(hour_of(now - RECENT_S))
        else:
            self.store.prune(now)

    def flush(self) -> int:
        """What arrived since the last flush, into the database and the recent store; returns how
        many samples. A failed write keeps them for the next flush (the database away a moment)."""
        if self.db is None:
            return 0
        with self._lock:
            taken, self.pending = self.pending, RollupStore()
            self._sink = self.pending
        samples = list(taken.raw)
        try:
            storage.flush(self.db, taken.rollups, samples)
        except Exception:
            with self._lock:
                self.pending.merge_into(taken)  # what came in meanwhile joins what is kept
                self.pending = taken
                self._sink = taken
            raise
        taken.raw.clear()
        taken.merge_into(self.store)
        return len(samples)

    def save(self) -> None:
        if self.rollup_file is not None:
            edge.write_json_atomic(self.rollup_file, self.store.dump())

    # ------------------------------------------------------------------ outputs

    def chart(self, county: str, since: float, until: float,
              source: Source = Source.REAL_USER) -> list[dict[str, Any]]:
        """Per hour and transaction: count, failures and p50/p95/p99 of every component (ms) - the
        rows a console chart stacks (network, queue, app, db) over time."""
        if self.db is not None:
            return [{**row, "title": TITLES[Transaction(row["transaction"])]}
                    for row in storage.summaries(self.db, county, source, since, until)]
        rows = []
        for key, rollup in sorted(self.store.select(county=county, source=source, since=hour_of(since),
                                                    until=until).items()):
            rows.append({"hour": key.hour, "transaction": key.transaction.value,
                         "title": TITLES[key.transaction], **rollup.summary()})
        return rows

    def history(self, county: str, since: float | None = None) -> RollupStore:
        """A county's rollups from `since` (default: what the advice rules compare) as a store."""
        if self.db is None:
            return self.store
        store = RollupStore()
        store.rollups.update(storage.load(self.db, county=county,
                                          since=since if since is not None else self.clock() - HISTORY_S))
        return store

    def facts(self, county: str, vm: str, vcpus: int, memory_mib: int) -> Facts:
        """What the advice rules need for one county's VM, from the rollups and the VM series."""
        ratios = server_p95_ratios(self.history(county), county, self.clock())
        return Facts(county, vm, vcpus, memory_mib, ratios,
                     {m: list(points) for m, points in self.vm_series.get(vm, {}).items()})
