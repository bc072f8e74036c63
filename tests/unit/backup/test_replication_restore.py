"""backup.replication.restore_database's retry: a restore that fails while Litestream changes the
replica's files is tried again; one that fails on a folder holding still fails with Litestream's
message; restore_to_disk picks the newest restorable state again when its own was compacted away
(Litestream itself replaced by a stand-in; the real one: tests/integration/backup)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine

from backup import replica, replication
from backup.replica import ReplicaSite
from provisioning.platform import Platform
from provisioning.spec import DomainType
from tests.unit.backup.test_replica import put

NO_FILES = "Error: no matching backup files available\n"


Outcome = tuple[int, int | None]


def fake(monkeypatch: pytest.MonkeyPatch, folder: Path, outcomes: list[Outcome]) -> list[list[str]]:
    """Litestream's restore replaced: each call takes the next (exit code, transaction whose level-0
    file appears in `folder` during the call); exit 0 writes a database at -o."""
    calls: list[list[str]] = []

    def run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        code, appears = outcomes[len(calls) - 1]
        if appears is not None:
            put(folder, 0, appears, appears, appears * 1_000)
        if code == 0:
            with sqlite3.connect(argv[argv.index("-o") + 1]) as db:
                db.execute("CREATE TABLE certification (id INTEGER PRIMARY KEY)")
        return subprocess.CompletedProcess(argv, code, "", "" if code == 0 else NO_FILES)

    monkeypatch.setattr(replication, "_litestream_restore", run)
    monkeypatch.setattr(replication, "litestream_binary", lambda: Path("/usr/bin/litestream"))
    return calls


def replica_folder(tmp_path: Path) -> tuple[ReplicaSite, Path]:
    site = ReplicaSite("secondary", tmp_path)
    folder = site.county_dir("taipei") / "ltx"
    put(folder, 9, 1, 1, 1_000)
    return site, folder


def test_a_restore_failing_while_the_files_change_is_tried_again(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    site, folder = replica_folder(tmp_path)
    calls = fake(monkeypatch, folder, [(1, 2), (0, None)])
    restored = replication.restore_database(site, "taipei", tmp_path / "out" / "t.db", txid=3)
    assert restored.exists() and len(calls) == 2
    assert calls[0][-3:] == ["-txid", "0000000000000003", f"file://{site.county_dir('taipei')}"]


def test_a_restore_failing_on_still_files_says_litestreams_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    site, folder = replica_folder(tmp_path)
    calls = fake(monkeypatch, folder, [(1, None), (0, None)])
    with pytest.raises(replication.ReplicationError, match="no matching backup files available"):
        replication.restore_database(site, "taipei", tmp_path / "t.db")
    assert len(calls) == 1 and not (tmp_path / "t.db").exists()


def test_retries_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, folder = replica_folder(tmp_path)
    moving: list[Outcome] = [(1, 2 + n) for n in range(replication.RESTORE_ATTEMPTS + 1)]
    calls = fake(monkeypatch, folder, moving)  # a new file during each call
    with pytest.raises(replication.ReplicationError, match=f"try {replication.RESTORE_ATTEMPTS}"):
        replication.restore_database(site, "taipei", tmp_path / "t.db")
    assert len(calls) == replication.RESTORE_ATTEMPTS


def test_restore_to_disk_picks_again_when_its_state_was_compacted_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = Platform(engine=create_engine("sqlite://"), state_dir=tmp_path / "state",
                        cache_dir=tmp_path / "cache", domain_type=DomainType.QEMU)
    site = replica.replica_site(platform.state_dir, "secondary")
    folder = site.county_dir("taipei") / "ltx"
    put(folder, 9, 1, 1, 1_000)
    for txid in range(2, 6):
        put(folder, 0, txid, txid, txid * 1_000)
    asked: list[int | None] = []

    def restore(held: ReplicaSite, tenant: str, target: Path, *, txid: int | None = None) -> Path:
        asked.append(txid)
        if txid == 5:  # meanwhile 2-6 compacted to level 1, 2-3 removed: 5 cannot be stopped at
            put(folder, 1, 2, 6, 6_000)
            put(folder, 0, 6, 6, 6_000)
            for gone in (2, 3):
                (folder / "0" / f"{gone:016x}-{gone:016x}.ltx").unlink()
            raise replication.ReplicationError("litestream restore of taipei: exit 1: " + NO_FILES)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"db")
        return target

    monkeypatch.setattr(replication, "restore_database", restore)
    monkeypatch.setattr(replication.records, "load_plans",
                        lambda _engine, _tenant: [SimpleNamespace(name="taipei-1", data_disk_mib=64)])
    def make(path: Path, _mib: int, _database: Path) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"disk")
        return True

    monkeypatch.setattr(replication.restored, "make", make)
    done = replication.restore_to_disk(platform, "taipei", site="secondary")
    assert asked == [5, 6] and done.made and done.state.txid == 6
    assert done.path.name == f"taipei-1-replica-{6:016x}.img" and done.path.exists()
    # A state that fails and is still the newest restorable one: Litestream's error, once.
    asked.clear()
    def failing(*_args: object, **_kwargs: object) -> Path:
        asked.append(0)
        raise replication.ReplicationError("exit 1: " + NO_FILES)

    monkeypatch.setattr(replication, "restore_database", failing)
    with pytest.raises(replication.ReplicationError, match="no matching backup files"):
        replication.restore_to_disk(platform, "taipei", site="secondary", vm_name="other")
    assert asked == [0]


def test_a_set_aside_replica_is_no_longer_a_state_to_restore(tmp_path: Path) -> None:
    """After a failback the county's replica is of a lineage that ended: moved out of the served
    folder (kept), so no later failover picks it; a rerun of the step finds it already moved."""
    platform = Platform(engine=create_engine("sqlite://"), state_dir=tmp_path / "state",
                        cache_dir=tmp_path / "cache", domain_type=DomainType.QEMU)
    site = replica.replica_site(platform.state_dir, "secondary")
    folder = site.county_dir("taipei") / "ltx"
    put(folder, 9, 1, 1, 1_000)
    put(folder, 0, 2, 2, 2_000)
    assert replication.newest(platform, "taipei") is not None

    kept = replication.set_aside(platform, "taipei", "job-1")
    assert kept is not None and (kept / "ltx").is_dir() and not site.county_dir("taipei").exists()
    assert site.served not in kept.parents, "a set-aside replica must not be served"
    assert replication.newest(platform, "taipei") is None
    assert replication.set_aside(platform, "taipei", "job-1") == kept  # the rerun
    assert replication.set_aside(platform, "keelung", "job-1") is None  # no replica: nothing to do
