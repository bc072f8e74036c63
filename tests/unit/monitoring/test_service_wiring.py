"""controlplane.monitor's plain parts (schedules, targets) and monitoring.storage over a migrated
platform database: flushes merge (never overwrite), summaries, retention, the migration's tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

import monitoring.storage  # noqa: F401  (registers the tables)
from controlplane.monitor import Serving, cron_every, stats_cron, targets
from inventory.db import Base, make_engine, migrate
from monitoring import storage
from monitoring.engine import MonitoringEngine
from monitoring.rollups import HOUR_S, RAW_RETENTION_S
from monitoring.timings import Component, Source
from monitoring.transactions import Transaction
from provisioning.probe_accounts import ProbeCredentials

NOW = 1_796_400_000.0


def line(at: float, app_ms: float = 38.0, county: str = "keelung") -> str:
    return (f'ccrum2 4242 7 {at:.3f} fe_{county} 201 POST "/api/v1/certifications" "" 1 40 '
            f"{int(app_ms) + 7} {{app;dur={app_ms:.2f}, db;dur=20.00}}")


def test_schedules() -> None:
    assert cron_every(60) == "0 */1 * * * *"
    assert stats_cron(60) == "30 */1 * * * *"
    assert cron_every(2) == "0/2 * * * * *" and stats_cron(2) == "1/2 * * * * *"
    assert cron_every(300) == "0 */5 * * * *"
    for bad in (0, 7, 90, 7200):
        with pytest.raises(ValueError):
            cron_every(bad)


def test_targets_use_the_kept_credentials_and_name_the_counties_without() -> None:
    kept = ProbeCredentials("cc-probe", "pw", "tok", 3, 9)
    found, missing = targets([Serving("keelung", 21001), Serving("penghu", 21002)],
                             lambda county: kept if county == "keelung" else None)
    assert [(t.county, t.base_url, t.account.budget_line_id) for t in found] == [
        ("keelung", "http://127.0.0.1:21001", 9)]
    assert missing == ["penghu"]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_the_migration_builds_the_models_tables(db: Engine) -> None:
    with db.connect() as connection:
        diffs = [d for d in compare_metadata(MigrationContext.configure(connection), Base.metadata)
                 if "monitoring_" in repr(d)]
    assert diffs == []


def test_two_processes_flushing_the_same_hour_merge_and_the_chart_reads_it(db: Engine) -> None:
    first, second = (MonitoringEngine(db=db, clock=lambda: NOW) for _ in range(2))
    first.ingest_gateway_lines([line(NOW - 10, 30.0)] * 99)
    second.ingest_gateway_lines([line(NOW - 5, 300.0)])
    assert first.flush() == 99 and second.flush() == 1
    assert first.flush() == 0  # nothing new
    [row] = first.chart("keelung", NOW - HOUR_S, NOW + 1)
    assert row["count"] == 100 and row["title"]
    assert abs(row["ms"]["server"]["p50"] - 30) < 0.5 and abs(row["ms"]["server"]["p99"] - 30) < 0.5
    [stored] = storage.load(db, county="keelung").values()
    slowest = stored.quantile(Component.SERVER, 1.0)
    assert slowest is not None and abs(slowest - 300) < 3  # the other process's answer is merged in
    # the recent store beside the database serves the metrics' last hour
    assert "countycloud_transaction_count" in first.metrics.exposition().decode()
    assert len(storage.samples(db, "keelung", NOW - HOUR_S)) == 100


def test_a_failed_flush_keeps_what_arrived(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = MonitoringEngine(db=db, clock=lambda: NOW)
    engine.ingest_gateway_lines([line(NOW - 10)])

    def away(*_: object) -> None:
        raise RuntimeError("database away")

    monkeypatch.setattr(storage, "flush", away)
    with pytest.raises(RuntimeError):
        engine.flush()
    engine.ingest_gateway_lines([line(NOW - 9)])
    monkeypatch.undo()
    assert engine.flush() == 2
    assert engine.chart("keelung", NOW - HOUR_S, NOW + 1)[0]["count"] == 2


def test_retention_a_day_of_samples_a_year_of_rollups(db: Engine) -> None:
    clock = [NOW - 400 * 24 * HOUR_S]
    engine = MonitoringEngine(db=db, clock=lambda: clock[0])
    engine.ingest_gateway_lines([line(clock[0])])  # over a year ago
    engine.ingest_gateway_lines([line(NOW - 2 * RAW_RETENTION_S)])  # two days ago
    engine.ingest_gateway_lines([line(NOW - 60)])
    engine.flush()
    clock[0] = NOW
    engine.prune()
    assert len(storage.samples(db, "keelung", 0)) == 1
    hours = sorted(key.hour for key in storage.load(db))
    assert len(hours) == 2 and hours[0] > NOW - 3 * 24 * HOUR_S
    assert engine.chart("keelung", 0, NOW + 1, source=Source.REAL_USER)[-1]["count"] == 1


def test_the_chart_page_reads_come_from_indexes(db: Engine) -> None:
    """A month of bars from the covering index alone (a row's sketches make it ~2 KB: visiting 720
    of them was most of the read), each transaction's latest hour without scanning the county."""
    from sqlalchemy import text

    from tests.support.monitoring_seed import seed_rollups

    seed_rollups(db, "keelung", days=2, now=NOW)
    with db.connect() as connection:
        bound = storage._CHART_BARS.params(county="keelung", source="real_user", transaction="certify",
                                           since=0, until=1)
        compiled = bound.compile(db, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(r[-1]) for r in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
        assert "COVERING INDEX ix_monitoring_rollups_chart" in plan, plan
        latest = storage.summaries(db, "keelung", Source.REAL_USER, NOW - HOUR_S, NOW + HOUR_S)
        assert {row["transaction"] for row in latest} == {
            "log_in", "budget_lines", "certify", "report", "export"}
        query = (f"EXPLAIN QUERY PLAN SELECT summary FROM monitoring_rollups WHERE county = 'keelung' "
                 f"AND source = 'real_user' AND hour >= {NOW - HOUR_S} AND hour < {NOW + HOUR_S}")
        plan = " ".join(str(r[-1]) for r in connection.execute(text(query)))
        assert "ix_monitoring_rollups_county_source_hour" in plan, plan
    bars = storage.chart_bars(db, "keelung", Source.REAL_USER, Transaction.CERTIFY, NOW - 2 * 86400, NOW + 1)
    assert len(bars) == 2 * 24 + 1 and bars == tuple(sorted(bars))
