"""backup.replication.restore_database's retry: a restore that fails while Litestream changes the
replica's files is tried again; one that fails on a folder holding still fails with Litestream's
message (Litestream itself replaced by a stand-in; the real one: tests/integration/backup)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from backup import replication
from backup.replica import ReplicaSite
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
