"""backup/frozen.py's pure parts and its freeze / thaw order, with a fake guest agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backup import frozen

LISTING = """debugfs: ls -l /
      2   40755 (2)      0      0    1024  5-Dec-2026 04:38 .
      2   40755 (2)      0      0    1024  5-Dec-2026 04:38 ..
     11   40700 (2)      0      0   12288  5-Dec-2026 04:38 lost+found
     12  100644 (1)    999    999   20480  5-Dec-2026 04:38 tenant.db
     13  100644 (1)    999    999   28872  5-Dec-2026 04:38 tenant.db-wal

debugfs: dump -p /tenant.db /x/tenant.db
"""


def test_listing_gives_regular_files_and_sizes_only() -> None:
    assert frozen.parse_listing(LISTING) == {"tenant.db": 20480, "tenant.db-wal": 28872}


def test_commands_list_the_root_then_dump_each_file(tmp_path: Path) -> None:
    assert frozen.debugfs_commands(tmp_path).splitlines() == [
        "ls -l /", f"dump -p /tenant.db {tmp_path}/tenant.db",
        f"dump -p /tenant.db-wal {tmp_path}/tenant.db-wal"]


def test_a_wal_listed_but_not_read_whole_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tenant.db").write_bytes(b"x" * 10)
    (tmp_path / "tenant.db-wal").write_bytes(b"y" * 3)
    with pytest.raises(frozen.ExtractFailed, match=r"tenant\.db-wal: 3 bytes read of 5"):
        frozen.check_dumped({"tenant.db": 10, "tenant.db-wal": 5}, tmp_path)
    frozen.check_dumped({"tenant.db": 10}, tmp_path)  # no WAL on the disk: the database alone
    with pytest.raises(frozen.ExtractFailed, match=r"no /tenant\.db"):
        frozen.check_dumped({"other": 1}, tmp_path)


class FakeAgent:
    def __init__(self, *, status: str = "thawed", fail: set[str] | None = None, froze: int = 1) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.status = status
        self.fail = fail or set()
        self.froze = froze

    def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
              timeout_s: int = 10) -> Any:
        self.calls.append((command, arguments))
        if command in self.fail:
            raise RuntimeError(f"{command} refused")
        if command == "guest-fsfreeze-freeze-list":
            if self.status == "frozen":  # qemu-ga disables every command but a few while frozen
                raise RuntimeError("The command guest-fsfreeze-freeze-list has been disabled")
            if self.froze:
                self.status = "frozen"
            return self.froze
        if command == "guest-fsfreeze-thaw":
            self.status = "thawed"
            return 1
        return {"guest-fsfreeze-status": self.status}[command]


def commands(agent: FakeAgent) -> list[str]:
    return [command for command, _ in agent.calls]


def test_the_data_file_system_alone_is_frozen_and_thawed_even_when_reading_fails(tmp_path: Path) -> None:
    agent = FakeAgent()
    disk = tmp_path / "not-ext4.img"
    disk.write_bytes(b"\0" * 4096)
    with pytest.raises(frozen.ExtractFailed):
        frozen.take(agent, "vm", disk, tmp_path / "out.db")
    # no status asked when the freeze is made: one agent exchange less per round
    assert commands(agent) == ["guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw"]
    assert agent.calls[0][1] == {"mountpoints": ["/srv/tenant-data"]}
    assert agent.status == "thawed"
    assert not (tmp_path / "out.db").exists()


def test_a_freeze_left_by_a_killed_attempt_is_released_first(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    agent = FakeAgent(status="frozen")
    monkeypatch.setattr(frozen, "extract", lambda disk, out: {})
    monkeypatch.setattr(frozen, "fold", lambda out, check=True: _db(out))
    taken = frozen.take(agent, "vm", tmp_path / "disk", tmp_path / "out.db")
    assert commands(agent) == ["guest-fsfreeze-freeze-list", "guest-fsfreeze-status", "guest-fsfreeze-thaw",
                               "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw"]
    assert agent.status == "thawed"
    assert taken.bytes == 4 and (tmp_path / "out.db").read_bytes() == b"data"
    assert (tmp_path / "out.db").stat().st_mode & 0o777 == 0o600


def _db(out: Path) -> Path:
    (out / "tenant.db").write_bytes(b"data")
    return out / "tenant.db"


def test_an_agent_that_does_not_freeze_is_a_freeze_failure_and_nothing_stays_frozen(tmp_path: Path) -> None:
    agent = FakeAgent(fail={"guest-fsfreeze-freeze-list"})
    with pytest.raises(frozen.FreezeFailed, match="refused"):
        frozen.take(agent, "vm", tmp_path / "disk", tmp_path / "out.db")
    assert agent.status == "thawed" and "guest-fsfreeze-thaw" not in commands(agent)
    nothing = FakeAgent(froze=0)  # the mount point not found: nothing frozen, another way is taken
    with pytest.raises(frozen.FreezeFailed, match="froze no file system"):
        frozen.take(nothing, "vm", tmp_path / "disk", tmp_path / "out.db")
    assert commands(nothing)[-1] == "guest-fsfreeze-thaw"
    away = FakeAgent(fail={"guest-fsfreeze-freeze-list", "guest-fsfreeze-status"})  # no agent at all
    with pytest.raises(frozen.FreezeFailed, match="freeze-list refused"):
        frozen.take(away, "vm", tmp_path / "disk", tmp_path / "out.db")


def test_a_stale_freeze_whose_thaw_fails_is_an_error_not_a_fallback(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frozen.time, "sleep", lambda _s: None)
    agent = FakeAgent(status="frozen", fail={"guest-fsfreeze-thaw"})
    with pytest.raises(frozen.ThawFailed):
        frozen.take(agent, "vm", tmp_path / "disk", tmp_path / "out.db")


def test_a_thaw_that_never_answers_is_reported_not_swallowed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frozen.time, "sleep", lambda _s: None)
    monkeypatch.setattr(frozen, "extract", lambda disk, out: {})
    agent = FakeAgent(fail={"guest-fsfreeze-thaw"})
    with pytest.raises(frozen.ThawFailed, match="may still be frozen"):
        frozen.take(agent, "vm", tmp_path / "disk", tmp_path / "out.db")
    assert commands(agent).count("guest-fsfreeze-thaw") == frozen.THAW_ATTEMPTS


def test_a_thaw_the_agent_cannot_make_is_made_the_other_way_and_the_copy_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The site's daemon gone with the guest frozen: the agent never answers the thaw, the caller's
    other way (SSH) thaws, and the database read while frozen is a good copy."""
    monkeypatch.setattr(frozen.time, "sleep", lambda _s: None)
    monkeypatch.setattr(frozen, "extract", lambda disk, out: {})
    monkeypatch.setattr(frozen, "fold", lambda out, check=True: _db(out))
    thawed: list[str] = []
    agent = FakeAgent(fail={"guest-fsfreeze-thaw"})
    taken = frozen.take(agent, "vm", tmp_path / "disk", tmp_path / "out.db",
                        thaw_otherwise=lambda: thawed.append("ssh"))
    assert thawed == ["ssh"] and (tmp_path / "out.db").read_bytes() == b"data"

    def cannot() -> None:
        raise frozen.ThawFailed("ssh: connection refused")

    with pytest.raises(frozen.ThawFailed, match=r"may still be frozen.*and otherwise: ssh: connection"):
        frozen.take(agent, "vm", tmp_path / "disk", tmp_path / "again.db", thaw_otherwise=cannot)
    assert not (tmp_path / "again.db").exists()
    assert taken.bytes == 4
