"""The timings in the platform database: hourly rollups for a year, raw samples for a day.

Tables (revision 0007_monitoring): `monitoring_rollups`, one row per (county, transaction, source,
hour) holding the DDSketches in their dict form (rollups.sketch_to_dict) and, beside them, the
summary the console draws (count, failures, p50/p95/p99 per component), so a chart of 30 days reads
small rows and never rebuilds a sketch; `monitoring_samples`, one row per answer (last day).

Writers (each `countycloud serve` process) keep what arrived since their last flush in memory and
merge it into the rows here (read, merge, write, in one transaction): a row is never overwritten
with one process's partial view, and DDSketch merges exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, BigInteger, Engine, Float, Index, Integer, String, bindparam, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from inventory.db import Base, session_scope
from monitoring.charts import BarRow
from monitoring.rollups import (
    RAW_RETENTION_S,
    ROLLUP_RETENTION_S,
    Rollup,
    RollupKey,
    hour_of,
)
from monitoring.rum import Sample
from monitoring.timings import Component, Source, Split
from monitoring.transactions import Transaction

NAME_LENGTH = 63


class RollupRow(Base):
    __tablename__ = "monitoring_rollups"

    county: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    transaction: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds, start of the hour
    count: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    sketches: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What one chart bar draws, as plain columns: a month of bars is read without decoding JSON.
    p50_network: Mapped[float | None] = mapped_column(Float)
    p50_queue: Mapped[float | None] = mapped_column(Float)
    p50_app: Mapped[float | None] = mapped_column(Float)
    p50_db: Mapped[float | None] = mapped_column(Float)
    p95_total: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_monitoring_rollups_hour", "hour"),
        # The chart page's two reads (revision 0010_monitoring_chart): a month of one transaction's
        # bars straight from this index (it holds every column a bar draws: no table row is visited,
        # and a row's sketches make it ~2 KB), and each transaction's latest hour (the primary key
        # puts transaction before source and hour, so that read scanned all the county's rows).
        Index("ix_monitoring_rollups_chart", "county", "source", "transaction", "hour", "count",
              "p50_network", "p50_queue", "p50_app", "p50_db", "p95_total"),
        Index("ix_monitoring_rollups_county_source_hour", "county", "source", "hour"),
    )


class SampleRow(Base):
    __tablename__ = "monitoring_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    county: Mapped[str] = mapped_column(String(NAME_LENGTH))
    transaction: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    total_ms: Mapped[float] = mapped_column(Float)
    network_ms: Mapped[float] = mapped_column(Float)
    queue_ms: Mapped[float] = mapped_column(Float)
    server_ms: Mapped[float] = mapped_column(Float)
    app_ms: Mapped[float] = mapped_column(Float)
    db_ms: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_monitoring_samples_at", "at"),
                      Index("ix_monitoring_samples_county_at", "county", "at"))


class AppliedAdviceRow(Base):
    """Advice applied (the resize job it started) with the figures it was judged by, the hour
    before and, once an hour has passed, the hour after: kept side by side."""

    __tablename__ = "monitoring_advice"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    county: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    vm: Mapped[str] = mapped_column(String(NAME_LENGTH))
    rule: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(500))
    change: Mapped[str] = mapped_column(String(200))  # e.g. "1 -> 2 vCPUs, 1024 -> 1024 MiB"
    job_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    applied_at: Mapped[float] = mapped_column(Float)
    before: Mapped[dict[str, float]] = mapped_column(JSON)
    after: Mapped[dict[str, float] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


def _key(row: RollupRow) -> RollupKey:
    return RollupKey(row.county, Transaction(row.transaction), Source(row.source), int(row.hour))


def _rollup(row: RollupRow) -> Rollup:
    return Rollup.from_dict({"count": row.count, "failures": row.failures, "sketches": row.sketches})


def _store_rollup(row: RollupRow, rollup: Rollup) -> None:
    data = rollup.to_dict()
    row.count, row.failures, row.sketches = data["count"], data["failures"], data["sketches"]
    summary = rollup.summary()
    row.summary = summary
    ms = summary["ms"]
    row.p50_network, row.p50_queue = ms[Component.NETWORK.value]["p50"], ms[Component.QUEUE.value]["p50"]
    row.p50_app, row.p50_db = ms[Component.APP.value]["p50"], ms[Component.DB.value]["p50"]
    row.p95_total = ms[Component.TOTAL.value]["p95"]


def flush(engine: Engine, rollups: Mapping[RollupKey, Rollup], samples: Sequence[Sample]) -> None:
    """Merge `rollups` (what arrived since the last flush) into the stored rows; add the samples."""
    if not rollups and not samples:
        return
    with session_scope(engine) as session, session.no_autoflush:
        existing: dict[tuple[str, str, str, int], RollupRow] = {}
        if rollups:
            hours = [key.hour for key in rollups]
            counties = sorted({key.county for key in rollups})
            within = RollupRow.hour.between(min(hours), max(hours))
            for found in session.scalars(select(RollupRow).where(RollupRow.county.in_(counties), within)):
                existing[(found.county, found.transaction, found.source, int(found.hour))] = found
        for key, delta in rollups.items():
            row = existing.get((key.county, key.transaction.value, key.source.value, key.hour))
            if row is None:
                row = RollupRow(county=key.county, transaction=key.transaction.value,
                                source=key.source.value, hour=key.hour)
                _store_rollup(row, delta)
                session.add(row)
                continue
            merged = _rollup(row)
            merged.merge(delta)
            _store_rollup(row, merged)
        session.add_all(SampleRow(county=s.county, transaction=s.transaction.value, source=s.source.value,
                                  at=s.at, status=s.status, total_ms=s.timing.total_ms,
                                  network_ms=s.timing.network_ms, queue_ms=s.timing.queue_ms,
                                  server_ms=s.timing.server_ms, app_ms=s.timing.app_ms, db_ms=s.timing.db_ms)
                        for s in samples)


def prune(engine: Engine, now: float) -> tuple[int, int]:
    """Raw samples older than a day and rollups older than a year go; returns (samples, rollups)."""
    with session_scope(engine) as session:
        samples = session.execute(delete(SampleRow).where(SampleRow.at < now - RAW_RETENTION_S))
        rollups = session.execute(delete(RollupRow).where(RollupRow.hour < hour_of(now - ROLLUP_RETENTION_S)))
        return getattr(samples, "rowcount", 0), getattr(rollups, "rowcount", 0)


def summaries(engine: Engine, county: str, source: Source, since: float, until: float,
              transaction: Transaction | None = None) -> list[dict[str, Any]]:
    """The console's rows: per hour and transaction, the stored summary (oldest first)."""
    query = (select(RollupRow.hour, RollupRow.transaction, RollupRow.summary)
             .where(RollupRow.county == county, RollupRow.source == source.value,
                    RollupRow.hour >= hour_of(since), RollupRow.hour < until)
             .order_by(RollupRow.hour, RollupRow.transaction))
    if transaction is not None:
        query = query.where(RollupRow.transaction == transaction.value)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [{"hour": int(hour), "transaction": transaction, **summary} for hour, transaction, summary in rows]


# Built once (bound values): composing the statement per request cost as much as running it.
_CHART_BARS = (
    select(RollupRow.hour, RollupRow.count, RollupRow.p50_network, RollupRow.p50_queue, RollupRow.p50_app,
           RollupRow.p50_db, RollupRow.p95_total)
    .where(RollupRow.county == bindparam("county"), RollupRow.source == bindparam("source"),
           RollupRow.transaction == bindparam("transaction"), RollupRow.hour >= bindparam("since"),
           RollupRow.hour < bindparam("until"))
    .order_by(RollupRow.hour))


def chart_bars(engine: Engine, county: str, source: Source, transaction: Transaction, since: float,
               until: float) -> tuple[BarRow, ...]:
    """(hour, count, p50 network, queue, app, db, p95 total) per hour: what a chart draws (Core, no
    ORM session: this is the chart page's one big read, answered from ix_monitoring_rollups_chart).
    A tuple of tuples, so that it can key the drawn chart (monitoring.charts.stacked_hours_of)."""
    with engine.connect() as connection:
        rows = connection.execute(_CHART_BARS, {"county": county, "source": source.value,
                                                "transaction": transaction.value,
                                                "since": hour_of(since), "until": math.ceil(until)}).all()
    return tuple((int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows)


def load(engine: Engine, *, county: str | None = None, since: float = 0.0) -> dict[RollupKey, Rollup]:
    """Stored rollups as sketches (for advice, before/after and the metrics' last hour)."""
    with session_scope(engine) as session:
        query = select(RollupRow).where(RollupRow.hour >= hour_of(since))
        if county is not None:
            query = query.where(RollupRow.county == county)
        return {_key(row): _rollup(row) for row in session.scalars(query)}


def samples(engine: Engine, county: str, since: float) -> list[Sample]:
    with session_scope(engine) as session:
        rows = session.scalars(select(SampleRow).where(SampleRow.county == county, SampleRow.at >= since)
                               .order_by(SampleRow.at))
        return [Sample(r.county, Transaction(r.transaction), r.at, r.status,
                       Split(r.total_ms, r.network_ms, r.queue_ms, r.server_ms, r.app_ms, r.db_ms),
                       Source(r.source)) for r in rows]


def counties_with_data(engine: Engine, since: float) -> list[str]:
    with session_scope(engine) as session:
        return sorted(set(session.scalars(select(RollupRow.county).where(RollupRow.hour >= hour_of(since))
                                          .distinct())))



# --------------------------------------------------------------------------- applied advice


def record_applied(engine: Engine, *, county: str, vm: str, rule: str, message: str, change: str,
                   job_id: str, actor: str, applied_at: float, before: Mapping[str, float]) -> int:
    with session_scope(engine) as session:
        row = AppliedAdviceRow(county=county, vm=vm, rule=rule, message=message, change=change, job_id=job_id,
                               actor=actor, applied_at=applied_at, before=dict(before), after=None)
        session.add(row)
        session.flush()
        return int(row.id)


def applied(engine: Engine, county: str, limit: int = 20) -> list[dict[str, Any]]:
    with engine.connect() as connection:  # Core: the monitoring page reads this on every view
        rows = connection.execute(
            select(AppliedAdviceRow.id, AppliedAdviceRow.vm, AppliedAdviceRow.rule, AppliedAdviceRow.message,
                   AppliedAdviceRow.change, AppliedAdviceRow.job_id, AppliedAdviceRow.actor,
                   AppliedAdviceRow.applied_at, AppliedAdviceRow.before, AppliedAdviceRow.after)
            .where(AppliedAdviceRow.county == county)
            .order_by(AppliedAdviceRow.applied_at.desc()).limit(limit)).all()
    return [{"id": r.id, "vm": r.vm, "rule": r.rule, "message": r.message, "change": r.change,
             "job_id": r.job_id, "actor": r.actor, "applied_at": r.applied_at,
             "before": dict(r.before), "after": dict(r.after) if r.after is not None else None}
            for r in rows]


def awaiting_after(engine: Engine, now: float, wait_s: float) -> list[tuple[int, str, float]]:
    """(id, county, applied_at) of applied advice whose hour after has passed and has no figures yet."""
    with session_scope(engine) as session:
        return [(int(i), c, float(a)) for i, c, a in session.execute(
            select(AppliedAdviceRow.id, AppliedAdviceRow.county, AppliedAdviceRow.applied_at)
            .where(AppliedAdviceRow.after.is_(None), AppliedAdviceRow.applied_at < now - wait_s)).all()]


def record_after(engine: Engine, advice_id: int, after: Mapping[str, float]) -> None:
    with session_scope(engine) as session:
        row = session.get(AppliedAdviceRow, advice_id)
        if row is not None:
            row.after = dict(after)
