"""The whole producer -> restic path with real restic: the guest's copy command, run on this host
against a SQLite database that a concurrent writer keeps committing to."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

from backup import consistent
from backup.restic import Restic
from tests.integration.backup.conftest import Sites


def _writer(database: Path, stop: threading.Event, committed: list[int]) -> None:
    with sqlite3.connect(database, timeout=30, isolation_level=None) as db:
        db.execute("PRAGMA synchronous=NORMAL")
        n = 0
        while not stop.is_set() and n < 20000:  # bounded in count and (by the caller) in time
            n += 1
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO certification (n, payload) VALUES (?, ?)", (n, "x" * 200))
            db.execute("COMMIT")
            committed.append(n)  # acknowledged: after its COMMIT returned


def test_copy_under_writes_holds_every_row_committed_before_it_and_passes_integrity_check(
        tmp_path: Path, sites: Sites, restic_runner: Restic) -> None:
    live = tmp_path / "tenant.db"
    with sqlite3.connect(live) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE certification (n INTEGER PRIMARY KEY, payload TEXT)")
    stop, committed = threading.Event(), []
    writer = threading.Thread(target=_writer, args=(live, stop, committed), daemon=True)
    writer.start()
    deadline = time.monotonic() + 30
    while len(committed) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    acknowledged_before = len(committed)
    producer = consistent.copy_argv(str(live), python=sys.executable, scratch_dir=str(tmp_path))
    staged = tmp_path / "staged.db"
    consistent.stage(producer, staged)
    result = consistent.store(restic_runner, sites.pair.primary, staged, "keelung")
    time.sleep(0.2)
    stop.set()
    writer.join(timeout=30)
    assert acknowledged_before >= 500

    snapshots = restic_runner.snapshots(sites.pair.primary, tags=["county=keelung"])
    assert [s.short_id for s in snapshots] == [result.snapshot_id[:8]]
    restored = tmp_path / "restored.db"
    restic_runner.dump(sites.pair.primary, result.snapshot_id, "/tenant.db", restored)
    with sqlite3.connect(restored) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = [n for (n,) in copy.execute("SELECT n FROM certification ORDER BY n")]
    # every commit acknowledged before the copy began is in it, with no gap, and the writer kept
    # committing while the copy was taken (so the copy is a cut through a live database)
    assert rows[:acknowledged_before] == list(range(1, acknowledged_before + 1))
    assert rows == list(range(1, len(rows) + 1))
    assert len(committed) > len(rows) >= acknowledged_before
