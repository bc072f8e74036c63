"""controlplane.replication_schedule's choice of counties to keep streaming, over a migrated platform
database: the active counties of the replicated tier at their home site; one running at the
secondary after a failover does not stream (its target would be the replica it was restored from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane import bootstrap, replication_schedule
from inventory import declare, loader, queries
from inventory.db import session_scope
from inventory.enums import Lifecycle, ProtectionTier


def test_only_replicated_counties_at_home_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COUNTYCLOUD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'countycloud.db'}")
    engine = bootstrap.engine()
    with session_scope(engine) as session:
        declare.apply(session, loader.load_sample())
        secondary = queries.get_site(session, "secondary")
        for tenant in queries.list_tenants(session):
            if tenant.slug in ("taichung", "taoyuan", "changhua"):
                tenant.protection = ProtectionTier.REPLICATED
            if tenant.slug != "changhua":
                queries.set_status(tenant, Lifecycle.ACTIVE, actor="test")
            if tenant.slug == "taoyuan":  # failed over
                queries.set_running_site(tenant, secondary, actor="test")
    assert replication_schedule.replicated_counties() == ["taichung"]

    with session_scope(engine) as session:  # failed back
        queries.set_running_site(queries.get_tenant(session, "taoyuan"), None, actor="test")
    assert sorted(replication_schedule.replicated_counties()) == ["taichung", "taoyuan"]


def test_every_county_is_checked_in_one_round_and_what_was_done_is_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from datetime import UTC, datetime

    from backup import replication
    from backup.replication import StreamAction, StreamCheck

    asked: list[list[str]] = []

    def check(_platform: object, tenants: list[str], *, target: object) -> list[StreamCheck]:
        asked.append(list(tenants))
        return [StreamCheck("taichung", StreamAction.STREAMING),
                StreamCheck("taoyuan", StreamAction.RESTARTED, 9, 4),
                StreamCheck("changhua", StreamAction.FAILED, error="ssh: exit 255")]

    counties = ["taichung", "taoyuan", "changhua"]
    monkeypatch.setattr(replication_schedule, "replicated_counties", lambda: counties)
    monkeypatch.setattr(replication_schedule.bootstrap, "platform", lambda: object())
    monkeypatch.setattr(replication, "ensure_target", lambda _platform: object())
    monkeypatch.setattr(replication, "check_streams", check)
    with caplog.at_level("INFO", logger="countycloud.backup"):
        replication_schedule.replicate(datetime.now(UTC))
    assert asked == [["taichung", "taoyuan", "changhua"]]
    said = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert ("INFO", "replication of taoyuan restarted") in said
    assert ("ERROR", "replication of changhua could not be checked or restarted: ssh: exit 255") in said
    assert not any("taichung" in message for _level, message in said)
