"""The guest copy command (pure argv) and staging, run on this host against a local SQLite file."""

from __future__ import annotations

import shlex
import sqlite3
import sys
from pathlib import Path

import pytest

from backup import consistent


def test_copy_argv_names_the_guest_database_and_a_scratch_folder_off_the_data_disk() -> None:
    argv = consistent.copy_argv()
    assert argv[0] == "python3" and argv[1] == "-c"
    assert argv[3] == "/srv/tenant-data/tenant.db"
    assert not argv[4].startswith("/srv/tenant-data")
    assert "mode=ro" in argv[2] and ".backup(" in argv[2]


def test_ssh_argv_reaches_the_forward_on_loopback_and_quotes_the_remote_command(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    argv = consistent.ssh_argv(key, 22042, ["python3", "-c", "print('a b')", "/x y"])
    assert argv[:5] == ["ssh", "-i", str(key), "-p", "22042"]
    assert argv[-2] == "root@127.0.0.1"
    # the guest's shell splits the one remote string back into the same argv
    assert shlex.split(argv[-1]) == ["python3", "-c", "print('a b')", "/x y"]
    assert "BatchMode=yes" in argv


def test_stage_copies_a_database_and_a_failed_producer_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "live.db"
    with sqlite3.connect(source) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (v INTEGER)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    target = tmp_path / "copy.db"
    size = consistent.stage(consistent.copy_argv(str(source), python=sys.executable,
                                                 scratch_dir=str(tmp_path)), target)
    assert size == target.stat().st_size > 0
    assert target.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(target) as copy:
        assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    missing = tmp_path / "absent.db"
    with pytest.raises(consistent.CopyFailed, match="exited"):
        consistent.stage(consistent.copy_argv(str(missing), python=sys.executable, scratch_dir=str(tmp_path)),
                         tmp_path / "other.db")
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "other.db.partial").exists()


def test_the_remote_command_string_survives_a_shell_and_copies_the_database(tmp_path: Path) -> None:
    """What ssh hands the guest's shell is the last argv item: run it through sh here."""
    source = tmp_path / "dir with space" / "tenant.db"
    source.parent.mkdir()
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE t (v TEXT)")
        db.execute("INSERT INTO t VALUES ('it''s here')")
    remote = consistent.ssh_argv(tmp_path / "key", 22000, consistent.copy_argv(
        str(source), python=sys.executable, scratch_dir=str(tmp_path)))[-1]
    target = tmp_path / "copy.db"
    consistent.stage(["sh", "-c", remote], target)
    with sqlite3.connect(target) as copy:
        assert copy.execute("SELECT v FROM t").fetchone()[0] == "it's here"
    assert list(tmp_path.glob("countycloud-backup-*")) == []  # the copy's scratch file is removed
