"""The backup schedule's crons, the per-county status and alerts, and the gauges on /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup import ops
from backup.verifications import Verification
from controlplane import backup_metrics, metrics
from controlplane.backup_schedule import Schedule, cron_every

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_cron_every_interval() -> None:
    assert cron_every(timedelta(seconds=60)) == "0 * * * * *"
    assert cron_every(timedelta(seconds=15)) == "*/15 * * * * *"
    assert cron_every(timedelta(minutes=10)) == "0 */10 * * * *"
    assert Schedule().rounds == "*/5 * * * * *"  # a tick: each county starts at its place (backup.rounds)
    for odd in (timedelta(seconds=45), timedelta(minutes=7), timedelta(0)):
        with pytest.raises(ValueError):
            cron_every(odd)


def point(minutes_ago: float, *, primary: bool = True, offsite: bool = True) -> ops.RestorePointInfo:
    return ops.RestorePointInfo(snapshot_id=f"{int(minutes_ago * 60):08x}" + "0" * 56, offsite_id=None,
                                taken_at=NOW - timedelta(minutes=minutes_ago), bytes=1000, primary=primary,
                                offsite=offsite, verified=False, verified_at=None, figures={})


def test_status_lag_and_alerts() -> None:
    points = [point(30), point(10, offsite=False), point(2, offsite=False)]
    status = ops.county_status("keelung", points, [], NOW)
    assert status.last_backup_age_s == 120 and status.offsite_lag_s == 28 * 60 and status.points == 3
    said = ops.alerts(status)
    assert any("offsite copy 1680 s behind" in line for line in said)
    assert any("no verification" in line for line in said)
    proof = Verification("keelung", "x" * 64, None, "secondary", True, "", NOW - timedelta(hours=1))
    caught_up = ops.county_status("keelung", [point(1)], [proof], NOW)
    assert ops.alerts(caught_up) == []
    failed = Verification("keelung", "x" * 64, None, "secondary", False, "", NOW)
    assert ops.alerts(ops.county_status("keelung", [point(1)], [proof, failed], NOW)) == [
        "keelung: the last verification failed"]
    assert ops.alerts(ops.county_status("keelung", [], [], NOW))[0] == "keelung: no restore point"


def test_gauges_reach_the_exposition() -> None:
    metrics.add_registry(backup_metrics.REGISTRY)
    try:
        status = ops.county_status("keelung", [point(30), point(1, offsite=False)], [], NOW)
        assert backup_metrics.publish(status)
        text = metrics.exposition().decode()
        assert 'countycloud_backup_last_age_seconds{county="keelung"} 60.0' in text
        assert 'countycloud_backup_offsite_lag_seconds{county="keelung"} 1740.0' in text
        assert 'countycloud_backup_last_verification_ok{county="keelung"} -1.0' in text
        assert 'countycloud_backup_alerts{county="keelung"} 2.0' in text
    finally:
        metrics.remove_registry(backup_metrics.REGISTRY)
