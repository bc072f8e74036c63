"""The pure parts of `countycloud platform recover` (controlplane.platform_recovery_plan, and
controlplane.platform_recovery_report's check of the DR site): what a recovery does with the
configured database as found, which snapshot it takes, and what the DR site is checked for.
The command itself, with real restic, is tests/integration/backup/test_platform_recover.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup import platformdb, repository
from backup.restic import Snapshot, SnapshotNotFound, write_password_file
from controlplane.platform_recovery_plan import Next, RecoveryRefused, Target, TargetKind, next_step
from controlplane.platform_recovery_report import dr_site_needs
from provisioning import probe_accounts

WHERE = "sqlite:////dr/countycloud.db"
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def snapshot(ident: str, minutes: int) -> Snapshot:
    return Snapshot(id=ident * 8, short_id=ident, time=T0 + timedelta(minutes=minutes), hostname="cp",
                    paths=("/platform.sqlite",), tags=("platform-db", "format=sqlite"))


def test_a_missing_or_empty_database_is_restored() -> None:
    assert next_step(Target(TargetKind.MISSING, WHERE), None, None) is Next.RESTORE
    assert next_step(Target(TargetKind.EMPTY, WHERE), "abcdef12", None) is Next.RESTORE


def test_files_left_by_the_lost_database_are_refused_by_name() -> None:
    with pytest.raises(RecoveryRefused, match=r"countycloud.db-wal, .*dbos.sqlite\): move them aside"):
        leftovers = ("/dr/countycloud.db-wal", "/dr/countycloud.dbos.sqlite")
        next_step(Target(TargetKind.MISSING, WHERE, leftovers), None, None)


def test_a_database_in_use_is_never_overwritten() -> None:
    live = Target(TargetKind.HOLDS, WHERE, counties=13)
    with pytest.raises(RecoveryRefused, match=r"holds a platform database in use \(13 counties\)"):
        next_step(live, None, None)
    # A marker of an unfinished recovery does not make a used database recoverable once its own
    # recovery event is in (then something else was recorded after it).
    with pytest.raises(RecoveryRefused):
        next_step(Target(TargetKind.HOLDS, WHERE, recovered_from="b" * 64), "a" * 8, "a" * 64)


def test_a_postgresql_database_only_migrated_is_left_to_the_operator_to_drop() -> None:
    with pytest.raises(RecoveryRefused, match="has the platform's tables and nothing in them"):
        next_step(Target(TargetKind.HOLDS, WHERE, unused=True), None, None)


def test_a_recovery_unused_since_is_done_for_the_same_snapshot_only() -> None:
    recovered = Target(TargetKind.HOLDS, WHERE, counties=2, recovered_from="abcdef12" * 8)
    assert next_step(recovered, None, None) is Next.NOTHING
    assert next_step(recovered, "abcdef12", None) is Next.NOTHING
    with pytest.raises(RecoveryRefused):
        next_step(recovered, "99999999", None)


def test_a_postgresql_recovery_cut_short_is_finished() -> None:
    restored = Target(TargetKind.HOLDS, WHERE, counties=2)
    assert next_step(restored, None, "c" * 64) is Next.FINISH
    assert next_step(restored, "cccccccc", "c" * 64) is Next.FINISH
    with pytest.raises(RecoveryRefused):  # another snapshot asked for than the one restored
        next_step(restored, "dddddddd", "c" * 64)


def test_the_newest_snapshot_or_the_one_named() -> None:
    found = [snapshot("aaaaaaaa", 0), snapshot("bbbbbbbb", 10), snapshot("abababab", 20)]
    assert platformdb.choose(found, None).short_id == "abababab"
    assert platformdb.choose(found, "bbbbbbbb").short_id == "bbbbbbbb"
    assert platformdb.choose(found, "aaaaaaaaaaaa").short_id == "aaaaaaaa"


@pytest.mark.parametrize(("wanted", "says"), [
    ("deadbeef", "no platform database snapshot deadbeef (the newest held: aaaaaaaa, bbbbbbbb)"),
    ("aaaa", "name a platform database snapshot by 8+ characters"),
])
def test_a_snapshot_not_held_names_what_is(wanted: str, says: str) -> None:
    with pytest.raises(SnapshotNotFound, match=re.escape(says)):
        platformdb.choose([snapshot("aaaaaaaa", 0), snapshot("bbbbbbbb", 10)], wanted)
    with pytest.raises(SnapshotNotFound, match="no platform database snapshot in the repository"):
        platformdb.choose([], None)


def test_what_the_dr_site_is_checked_for(tmp_path: Path) -> None:
    needs = {need.what: need for need in dr_site_needs(tmp_path, "secondary", ["keelung"])}
    assert not any(need.present for need in needs.values())
    assert "DR safe" in needs["secondary's repository password"].without
    assert "keelung" in needs["probe accounts"].without

    backup = repository.site_backup(tmp_path, "secondary")
    write_password_file(backup.password_file, "secret")
    backup.repository_dir.mkdir(parents=True)
    (backup.repository_dir / "config").write_bytes(b"x")
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "id_ed25519").write_text("key")
    probe_accounts.save(tmp_path, "keelung", probe_accounts.ProbeCredentials("probe", "pw", "token", 1, 2))
    needs = {need.what: need for need in dr_site_needs(tmp_path, "secondary", ["keelung"])}
    assert [what for what, need in needs.items() if not need.present] == ["secondary's daemons"]


def test_a_failover_refuses_before_fencing_without_the_repository_or_its_password(tmp_path: Path) -> None:
    from dr import restorepoints
    from inventory.db import make_engine
    from provisioning.platform import Platform
    from provisioning.spec import DomainType

    platform = Platform(engine=make_engine("sqlite://"), state_dir=tmp_path, cache_dir=tmp_path,
                        domain_type=DomainType.QEMU)
    with pytest.raises(restorepoints.PointError, match=r"no restic repository at \S+: secondary holds"):
        restorepoints.check_repository(platform, "secondary")
    backup = repository.site_backup(tmp_path, "secondary")
    backup.repository_dir.mkdir(parents=True)
    (backup.repository_dir / "config").write_bytes(b"x")
    with pytest.raises(restorepoints.PointError, match="comes from the DR safe"):
        restorepoints.check_repository(platform, "secondary")
    write_password_file(backup.password_file, "secret")
    restorepoints.check_repository(platform, "secondary")
