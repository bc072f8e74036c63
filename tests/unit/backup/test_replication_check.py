"""backup.replication.check_streams: a county's stream judged by what reaches its replica, not only
by its Litestream service running (the guest's SSH and the forward's reset replaced by stand-ins;
the real ones: tests/integration/vm/test_replication.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine

from backup import replica, replicaserver, replication
from backup.replication import GuestStream, StreamAction
from provisioning.platform import Platform
from provisioning.spec import DomainType
from tests.unit.backup.test_replica import put


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return Platform(engine=create_engine("sqlite://"), state_dir=tmp_path / "state",
                    cache_dir=tmp_path / "cache", domain_type=DomainType.QEMU)


def stand_ins(monkeypatch: pytest.MonkeyPatch, seen: dict[str, GuestStream | None],
              replica_port: int | None = 23010) -> list[tuple[str, str]]:
    """Each county one VM `COUNTY-1` whose guest shows `seen[COUNTY]`; returns the (re)starts made."""
    done: list[tuple[str, str]] = []
    monkeypatch.setattr(replication.records, "load_plans", lambda _engine, tenant: [
        SimpleNamespace(name=f"{tenant}-1", site="primary", replica_port=replica_port)])
    monkeypatch.setattr(replication, "observe", lambda _platform, plan: seen[plan.name[:-2]])
    monkeypatch.setattr(replication, "enable",
                        lambda _platform, tenant, target: done.append(("enable", tenant)))
    monkeypatch.setattr(replication, "restart_stream",
                        lambda _platform, plan, _target: done.append(("restart", plan.name)))
    return done


def test_a_running_stream_whose_replica_stays_behind_is_restarted_and_the_others_left(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    target = replicaserver.server(replica.replica_site(platform.state_dir, "secondary"), 23010)
    folder = target.site.county_dir
    put(folder("taipei") / "ltx", 0, 1, 7, 7_000)  # caught up with its guest
    put(folder("tainan") / "ltx", 0, 1, 4, 4_000)  # its guest cut 5 and 6: nothing came since
    done = stand_ins(monkeypatch, {"taipei": GuestStream(True, 7), "tainan": GuestStream(True, 6),
                                   "yilan": GuestStream(False, None), "hsinchu": GuestStream(True, None)})
    checked = replication.check_streams(platform, ["taipei", "tainan", "yilan", "hsinchu"],
                                        target=target, catch_up_s=0.2)
    assert [(c.tenant, c.action) for c in checked] == [
        ("taipei", StreamAction.STREAMING), ("tainan", StreamAction.RESTARTED),
        ("yilan", StreamAction.ENABLED), ("hsinchu", StreamAction.STREAMING)]
    assert (checked[1].wanted_txid, checked[1].reached_txid) == (6, 4)
    assert done == [("enable", "yilan"), ("restart", "tainan-1")]


def test_a_replica_that_catches_up_within_the_wait_is_not_restarted(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    target = replicaserver.server(replica.replica_site(platform.state_dir, "secondary"), 23010)
    ltx = target.site.county_dir("taipei") / "ltx"
    put(ltx, 0, 1, 4, 4_000)
    done = stand_ins(monkeypatch, {"taipei": GuestStream(True, 5)})
    arrived = replica.listing

    def listing_then_arrival(site: replica.ReplicaSite, tenant: str) -> list[replica.LtxFile]:
        files = arrived(site, tenant)
        put(ltx, 0, 5, 5, 5_000)  # Litestream's next file lands while the check waits
        return files

    monkeypatch.setattr(replication.replica, "listing", listing_then_arrival)
    [checked] = replication.check_streams(platform, ["taipei"], target=target, catch_up_s=5)
    assert checked.action is StreamAction.STREAMING and done == []


def test_an_unreachable_guest_or_a_county_without_a_forward_is_enabled_and_a_failure_is_its_own(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    target = replicaserver.server(replica.replica_site(platform.state_dir, "secondary"), 23010)
    done = stand_ins(monkeypatch, {"taipei": None, "tainan": GuestStream(True, 3)})

    def enable(_platform: Platform, tenant: str, target: object) -> None:
        raise replication.ReplicationError(f"{tenant}-1: not of the replicated tier (no guestfwd)")

    monkeypatch.setattr(replication, "enable", enable)
    checked = replication.check_streams(platform, ["taipei", "tainan"], target=target, catch_up_s=0)
    assert [c.action for c in checked] == [StreamAction.FAILED, StreamAction.RESTARTED]
    assert "no guestfwd" in (checked[0].error or "") and done == [("restart", "tainan-1")]
    with pytest.raises(replication.ReplicationError, match="could not be checked or restarted"):
        replication.ensure_streaming(platform, "taipei", target=target, catch_up_s=0)


def test_the_guests_local_position_is_read_from_litestreams_file_names() -> None:
    local = replica.local_ltx_dir("/srv/tenant-data/tenant.db")
    assert local == "/srv/tenant-data/.tenant.db-litestream/ltx/0"
    names = ["0000000000000001-0000000000000001.ltx", "0000000000000002-000000000000000a.ltx",
             "000000000000000b-000000000000000b.ltx.123.456.tmp", "notes.txt", "zz-01.ltx"]
    assert replica.local_position(names) == 10
    assert replica.local_position([]) is None
