"""Per county, transaction and hour: how many answers and their quantiles, from a mergeable sketch.

Each (county, transaction, source, hour) keeps one DDSketch per time component (total, network,
queue, server, app, db). DDSketch bounds the relative error of every quantile (1 % here) and merges
exactly, so a day's p99 comes from merging 24 hourly sketches, never from averaging their p99s.
Sketches are stored in their own dict form (bins by key), which JSON and a database column take.

Retention (`prune`): raw samples for a day, hourly rollups for a year. Storage is in memory with a
JSON dump/load (the service writes it to a file); a database table is for later (docs/monitoring.md).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ddsketch import DDSketch
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from monitoring.rum import Sample
from monitoring.timings import Component, Source
from monitoring.transactions import Transaction

RELATIVE_ACCURACY = 0.01
HOUR_S = 3600
RAW_RETENTION_S = 24 * HOUR_S
ROLLUP_RETENTION_S = 366 * 24 * HOUR_S
QUANTILES = (0.5, 0.95, 0.99)
SERIAL_VERSION = 1


def new_sketch() -> BaseDDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


def sketch_to_dict(sketch: BaseDDSketch) -> dict[str, Any]:
    """The sketch's bins by key plus its exact count/min/max/sum; values are never negative here."""
    store: DenseStore = sketch._store
    if sketch._negative_store.count:
        raise ValueError("timing sketches hold no negative values")
    bins = [[store.offset + i, weight] for i, weight in enumerate(store.bins) if weight]
    return {"alpha": sketch._relative_accuracy, "zero": sketch._zero_count, "bins": bins,
            "min": sketch._min if sketch.count else None, "max": sketch._max if sketch.count else None,
            "sum": sketch._sum}


def sketch_from_dict(data: Mapping[str, Any]) -> BaseDDSketch:
    store = DenseStore()
    for key, weight in data["bins"]:
        store.add(int(key), float(weight))
    sketch = BaseDDSketch(LogarithmicMapping(float(data["alpha"])), store, DenseStore(), float(data["zero"]))
    if sketch.count:
        sketch._min, sketch._max = float(data["min"]), float(data["max"])
    sketch._sum = float(data["sum"])
    return sketch


def hour_of(at: float) -> int:
    """The start of the hour (epoch seconds) an instant falls in."""
    return int(at // HOUR_S) * HOUR_S


class RollupKey(NamedTuple):
    """A NamedTuple (hashed once per gateway line, so cheaply)."""

    county: str
    transaction: Transaction
    source: Source
    hour: int  # epoch seconds at the start of the hour


@dataclass
class Rollup:
    count: int = 0
    failures: int = 0
    sketches: dict[Component, BaseDDSketch] = field(
        default_factory=lambda: {component: new_sketch() for component in Component})

    def add(self, sample: Sample) -> None:
        self.count += 1
        status = sample.status
        if status >= 500 or status <= 0:
            self.failures += 1
        # Split's fields are in Component's order: one pass, no lookups (once per gateway line).
        for sketch, value in zip(self._ordered(), sample.timing, strict=True):
            sketch.add(value)

    def _ordered(self) -> tuple[BaseDDSketch, ...]:
        return tuple(self.sketches[c] for c in Component)

    def merge(self, other: Rollup) -> None:
        self.count += other.count
        self.failures += other.failures
        for component in Component:
            if other.sketches[component].count:
                self.sketches[component].merge(other.sketches[component])

    def quantile(self, component: Component, q: float) -> float | None:
        sketch = self.sketches[component]
        value = sketch.get_quantile_value(q) if sketch.count else None
        return None if value is None or math.isnan(value) else float(value)

    def summary(self) -> dict[str, Any]:
        """count, failures and p50/p95/p99 (ms) per component: what the console and advice read."""
        return {"count": self.count, "failures": self.failures,
                "ms": {c.value: {f"p{round(q * 100)}": self.quantile(c, q) for q in QUANTILES}
                       for c in Component}}

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "failures": self.failures,
                "sketches": {c.value: sketch_to_dict(s) for c, s in self.sketches.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollup:
        sketches = {Component(name): sketch_from_dict(s) for name, s in data["sketches"].items()}
        for component in Component:
            sketches.setdefault(component, new_sketch())
        return cls(int(data["count"]), int(data["failures"]), sketches)


class _Batch:
    """One rollup key's part of a batch: counts of each component's values, then weighted adds."""

    __slots__ = ("count", "failures", "values")

    def __init__(self) -> None:
        self.count = 0
        self.failures = 0
        self.values: tuple[dict[float, int], ...] = tuple({} for _ in Component)

    def add(self, sample: Sample) -> None:
        self.count += 1
        if sample.failed:
            self.failures += 1
        for counts, value in zip(self.values, sample.timing, strict=True):
            counts[value] = counts.get(value, 0) + 1

    def into(self, rollup: Rollup) -> None:
        rollup.count += self.count
        rollup.failures += self.failures
        for sketch, counts in zip(rollup._ordered(), self.values, strict=True):
            for value, weight in counts.items():
                sketch.add(value, weight)


class RollupStore:
    """Hourly rollups and the last day's raw samples, in memory.

    Thread-safe: the gateway log's reader thread adds while a /metrics scrape or a chart reads.
    """

    def __init__(self) -> None:
        self.rollups: dict[RollupKey, Rollup] = {}
        self.raw: deque[Sample] = deque()
        self.keep_raw = True  # False: a store beside the database keeps no samples (the table does)
        self._lock = threading.RLock()

    def add(self, sample: Sample) -> None:
        self.extend((sample,))

    def extend(self, samples: Iterable[Sample]) -> int:
        """Add a batch (the gateway reader's): its values are counted first and each distinct value
        goes into its sketch once, with its count as the weight. A busy gateway's lines repeat the
        same few milliseconds, and a sketch's add (a logarithm, a bin) was most of the reader's
        CPU per line; the sketches are the same as from one add per sample."""
        batch: dict[RollupKey, _Batch] = {}
        arrived = list(samples)
        for sample in arrived:
            key = RollupKey(sample.county, sample.transaction, sample.source, hour_of(sample.at))
            grouped = batch.get(key)
            if grouped is None:
                grouped = batch[key] = _Batch()
            grouped.add(sample)
        with self._lock:
            for key, grouped in batch.items():
                rollup = self.rollups.get(key)
                if rollup is None:
                    rollup = self.rollups[key] = Rollup()
                grouped.into(rollup)
            if self.keep_raw:
                self.raw.extend(arrived)
        return len(arrived)

    def prune(self, now: float) -> None:
        with self._lock:
            # Samples arrive roughly in time order; an old straggler behind newer ones stays a bit longer.
            while self.raw and self.raw[0].at < now - RAW_RETENTION_S:
                self.raw.popleft()
            oldest_hour = hour_of(now - ROLLUP_RETENTION_S)
            for key in [k for k in self.rollups if k.hour < oldest_hour]:
                del self.rollups[key]

    def prune_before(self, hour: int) -> None:
        with self._lock:
            for key in [k for k in self.rollups if k.hour < hour]:
                del self.rollups[key]

    def merge_into(self, other: RollupStore) -> None:
        """Add this store's rollups and samples to `other`'s."""
        with self._lock, other._lock:
            for key, rollup in self.rollups.items():
                mine = other.rollups.get(key)
                if mine is None:
                    other.rollups[key] = mine = Rollup()
                mine.merge(rollup)
            if other.keep_raw:
                other.raw.extend(self.raw)

    def select(self, *, county: str | None = None, transaction: Transaction | None = None,
               source: Source | None = None, since: float = 0.0,
               until: float = math.inf) -> dict[RollupKey, Rollup]:
        with self._lock:
            return {k: r for k, r in self.rollups.items()
                    if (county is None or k.county == county)
                    and (transaction is None or k.transaction == transaction)
                    and (source is None or k.source == source)
                    and since <= k.hour < until}

    def combined(self, **criteria: Any) -> Rollup:
        """One rollup merging every hour that matches (e.g. a county's 簽證 over the last day)."""
        total = Rollup()
        with self._lock:
            for rollup in self.select(**criteria).values():
                total.merge(rollup)
        return total

    def merged(self, since: float, group: Callable[[RollupKey], Hashable]) -> dict[Hashable, Rollup]:
        """Rollups from `since` on, merged per group(key) (e.g. per county and transaction)."""
        result: dict[Hashable, Rollup] = {}
        with self._lock:
            for key, rollup in self.select(since=since).items():
                result.setdefault(group(key), Rollup()).merge(rollup)
        return result

    def dump(self) -> dict[str, Any]:
        with self._lock:
            return {"version": SERIAL_VERSION, "rollups": [
                {"county": k.county, "transaction": k.transaction.value, "source": k.source.value,
                 "hour": k.hour, **r.to_dict()} for k, r in sorted(self.rollups.items())]}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> RollupStore:
        if data.get("version") != SERIAL_VERSION:
            raise ValueError(f"unknown rollup dump version {data.get('version')!r}")
        store = cls()
        for row in data["rollups"]:
            key = RollupKey(row["county"], Transaction(row["transaction"]), Source(row["source"]),
                            int(row["hour"]))
            store.rollups[key] = Rollup.from_dict(row)
        return store
