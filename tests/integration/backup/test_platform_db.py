"""The platform's own database, backed up at the primary, copied offsite, and restored from the
OFFSITE repository into a fresh database whose counties a control plane could list (SQLite and
PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from backup import platformdb
from backup.platformdb import DumpFormat, PlatformDbError
from backup.restic import SourceFailed
from inventory import queries
from inventory.db import make_engine, migrate, session_scope
from inventory.declare import apply
from inventory.loader import load_text
from tests.integration.backup.conftest import Sites
from tests.support import postgres

pytestmark = pytest.mark.skipif(shutil.which("restic") is None or shutil.which("rclone") is None,
                                reason="restic and rclone are installed by scripts/host-setup.sh")

DECLARATION = """\
sites:
  - name: primary
    role: primary
    hosts: [{name: p1, vcpus: 4, memory_mb: 8192, disk_gb: 100}]
  - name: secondary
    role: secondary
    hosts: [{name: s1, vcpus: 4, memory_mb: 8192, disk_gb: 100}]
size_templates: [{name: small, vcpus: 1, memory_mb: 1024, data_disk_mb: 256}]
networks: [{name: tenant-user, kind: user}]
images: [{name: bookworm-tenant}]
tenants:
  - {slug: keelung, name: 基隆市, site: primary, network: tenant-user, image: bookworm-tenant,
     vms: [{role: accounting, size: small}]}
  - {slug: penghu, name: 澎湖縣, site: primary, network: tenant-user, image: bookworm-tenant,
     vms: [{role: accounting, size: small}]}
"""


def counties_and_secrets(url: str) -> list[tuple[str, str, str]]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return [(t.slug, t.name, t.app_secret) for t in queries.list_tenants(session)]
    finally:
        engine.dispose()


def fresh_target(kind: DumpFormat, tmp_path: Path) -> str:
    if kind is DumpFormat.SQLITE:
        return f"sqlite:///{tmp_path / 'restored' / 'countycloud.db'}"
    return postgres.fresh_database("restored")


def test_platform_database_restored_from_offsite_lists_the_counties(
        db_url: str, sites: Sites, tmp_path: Path) -> None:
    restic, pair = sites.restic, sites.pair
    migrate(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        apply(session, load_text(DECLARATION))
    engine.dispose()
    before = counties_and_secrets(db_url)
    assert [slug for slug, _, _ in before] == ["keelung", "penghu"]

    taken = platformdb.backup(restic, pair.primary, db_url, tmp_path / "scratch", host="control-plane")
    assert taken.format is platformdb.format_of(db_url)
    restic.copy(pair.offsite, pair.primary)
    # restore from the offsite copy only: the primary's repository is gone with its site
    shutil.rmtree(Path(pair.primary.location))

    snapshot = platformdb.newest(restic, pair.offsite)
    assert snapshot.tag_value("format") == taken.format.value
    target = fresh_target(taken.format, tmp_path)
    (tmp_path / "restored").mkdir()
    try:
        platformdb.restore(restic, pair.offsite, snapshot, target, tmp_path / "scratch")
        migrate(target)  # already at head: a control plane starts on it as it is
        assert counties_and_secrets(target) == before
        if taken.format is DumpFormat.SQLITE:
            # the stored copy is encrypted: the county secrets are not readable in the repository
            secret = before[0][2].encode()
            stored = b"".join(p.read_bytes() for p in pair.offsite_server.root.rglob("*") if p.is_file())
            assert secret not in stored
        with pytest.raises(PlatformDbError, match=r"never overwrites|cannot take"):
            platformdb.restore(restic, pair.offsite, snapshot, target if taken.format is DumpFormat.SQLITE
                               else f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "scratch")
    finally:
        if taken.format is DumpFormat.PG_CUSTOM:
            postgres.drop_database(target)


def test_sqlite_copy_is_consistent_while_a_writer_keeps_writing(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    with sqlite3.connect(live) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT)")
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        with sqlite3.connect(live, timeout=30) as db:
            n = 0
            while not stop.is_set() and n < 200_000:
                n += 1
                db.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 200))
                db.commit()
                written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        copy = platformdb.sqlite_copy(live, tmp_path / "copy.db")
    finally:
        stop.set()
        thread.join()
    with sqlite3.connect(copy) as db:
        count, top = db.execute("SELECT count(*), max(n) FROM t").fetchone()
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    # a prefix of the writes, none missing: every row up to the newest copied one is there
    assert count > 0 and count == top
    assert mode == "delete"


@pytest.mark.parametrize("check", [platformdb.CopyCheck.FULL, platformdb.CopyCheck.QUICK])
def test_a_damaged_sqlite_copy_fails_its_check(tmp_path: Path, check: platformdb.CopyCheck) -> None:
    path = tmp_path / "damaged.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?)", ((n, "x" * 300) for n in range(3000)))
    platformdb.check_sqlite(path, check)  # intact: passes
    size = path.stat().st_size
    with path.open("r+b") as raw:
        raw.seek(size // 2)
        raw.write(os.urandom(4096))
    with pytest.raises(PlatformDbError):
        platformdb.check_sqlite(path, check)


def test_pg_dump_failure_leaves_no_snapshot(sites: Sites, tmp_path: Path) -> None:
    url = postgres.fresh_database("gone")
    postgres.drop_database(url)  # pg_dump will fail to connect
    with pytest.raises(SourceFailed, match="pg_dump"):
        platformdb.backup(sites.restic, sites.pair.primary, url, tmp_path / "scratch")
    assert platformdb.snapshots(sites.restic, sites.pair.primary) == []
