"""backup/frozen.py on a real ext4 data disk (mkfs.ext4 -d, debugfs): the database and the WAL of
commits not yet checkpointed are read from the raw disk and folded into one file with every row."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from backup import frozen
from tests.unit.backup.test_frozen import FakeAgent


def _disk_with_uncheckpointed_wal(tmp_path: Path, rows: int) -> Path:
    content = tmp_path / "content"
    content.mkdir()
    db = sqlite3.connect(content / "tenant.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE certification (id INTEGER PRIMARY KEY, amount INTEGER)")
    db.commit()
    db.executemany("INSERT INTO certification (amount) VALUES (?)", [(n,) for n in range(rows)])
    db.commit()
    # what the guest's disk holds while the app runs: the commits in the WAL, not in the file
    shutil.copy(content / "tenant.db-wal", tmp_path / "wal")
    db.close()
    shutil.copy(tmp_path / "wal", content / "tenant.db-wal")
    (content / "tenant.db-shm").unlink(missing_ok=True)
    disk = tmp_path / "data.img"
    with disk.open("wb") as image:
        image.truncate(32 << 20)
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    subprocess.run([mkfs, "-q", "-F", "-L", "ccdata", "-d", str(content), str(disk)], check=True)
    return disk


def test_acknowledged_commits_in_the_wal_are_in_the_copy(tmp_path: Path) -> None:
    disk = _disk_with_uncheckpointed_wal(tmp_path, rows=500)
    assert (tmp_path / "wal").stat().st_size > 0
    agent = FakeAgent()
    taken = frozen.take(agent, "vm", disk, tmp_path / "staged" / "tenant.db")
    with sqlite3.connect(taken.path) as db:
        found = db.execute("SELECT count(*), sum(amount) FROM certification").fetchone()
        assert found == (500, sum(range(500)))
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert sorted(p.name for p in taken.path.parent.iterdir()) == ["tenant.db"]  # no WAL, no scratch left
    assert [c for c, _ in agent.calls][-1] == "guest-fsfreeze-thaw"
    assert taken.frozen_s >= 0 and taken.bytes == taken.path.stat().st_size


def test_unchecked_take_leaves_the_check_to_the_caller_and_folds_all_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = _disk_with_uncheckpointed_wal(tmp_path, rows=50)
    checks: list[Path] = []
    monkeypatch.setattr(frozen, "check_sqlite", lambda path, _kind: checks.append(path))
    taken = frozen.take(FakeAgent(), "vm", disk, tmp_path / "staged" / "tenant.db", check=False)
    assert checks == []
    with sqlite3.connect(taken.path) as db:
        assert db.execute("SELECT count(*) FROM certification").fetchone() == (50,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    frozen.take(FakeAgent(), "vm", disk, tmp_path / "again" / "tenant.db")
    assert len(checks) == 1  # checked by default
