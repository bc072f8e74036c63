"""Backup faults without VMs (issue 12), with real restic and a real REST server: the offsite server
away (rounds keep landing locally, the lag grows and alerts, the catch-up copies everything back), a
wrong password (the round fails with restic's message, no secret in it), and a worker killed -9 in the
middle of its snapshot (the rerun clears the dead process's lock and makes exactly one restore point).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from backup import ops, repository, restserver, verifications
from backup.restic import Restic, WrongPassword, write_password_file
from provisioning.platform import Platform
from tests.integration.backup.conftest import county_platform, free_port, producer, stop_rest_servers
from tests.unit.provisioning.test_steps_lists import demo_db, engine  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def platform(engine: Engine, tmp_path: Path, port: int,  # noqa: F811
             made_repositories: Path) -> Iterator[Platform]:
    platform = county_platform(engine, tmp_path, made_repositories)
    yield platform
    stop_rest_servers(platform, {"secondary": port})


def _bind_when_free(held: socket.socket, port: int, within_s: float = 70) -> None:
    """Bind once the stopped server's connections have left TIME_WAIT (up to a minute on Linux): CI
    once found the port still taken right after the stop."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            held.bind(("127.0.0.1", port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_offsite_away_rounds_land_locally_lag_alerts_and_the_catch_up_copies_them(
        platform: Platform, county_db: Path, tmp_path: Path, port: int) -> None:
    sites = ops.BackupSites(rest_port=port)
    source = producer(county_db, tmp_path / "s")
    ops.backup_now(platform, "keelung", sites=sites, producer=source)
    server = repository.site_backup(platform.state_dir, "secondary").rest_server(port)
    restserver.stop(server)
    # The port held (bound, not listening): the server cannot come back and clients are refused.
    with socket.socket() as held:
        _bind_when_free(held, port)
        later = []
        for _ in range(2):
            time.sleep(1.1)  # restic times are in seconds: let the lag show
            taken = ops.backup_now(platform, "keelung", sites=sites, producer=source)
            assert not taken.reused and "offsite unreachable" in taken.offsite
            later.append(taken.snapshot_id)
        listed = ops.restore_points(platform, "keelung", sites)
        assert set(listed.unreachable) == {"secondary"}
        assert len(listed.points) == 3 and all(point.primary for point in listed.points)
    # What the offsite held before it went away, against the primary's now: two rounds behind.
    found, _ = ops.points_by_county(platform, ops.BackupSites(rest_port=port))
    [points] = found.values()
    behind = ops.county_status("keelung", points, [], datetime.now(UTC))
    assert behind.offsite_lag_s is not None and behind.offsite_lag_s >= 2
    assert any("offsite copy" in line for line in ops.alerts(behind, ops.Thresholds(offsite_lag_s=1)))
    assert not any("offsite copy" in line for line in ops.alerts(behind, ops.Thresholds(offsite_lag_s=600)))

    copied = ops.copy_offsite(platform, sites)  # the catch-up, once the server can start again
    assert len(copied.copied) == 2 and len(copied.skipped) == 1
    assert ops.copy_offsite(platform, sites).copied == {}  # idempotent
    found, unreachable = ops.points_by_county(platform, sites)
    assert unreachable == {}
    level = ops.county_status("keelung", found["keelung"], [], datetime.now(UTC))
    assert level.offsite_lag_s == 0 and level.points == 3
    assert all(point.offsite for point in found["keelung"])


def test_a_wrong_password_fails_the_round_with_restics_message_and_no_secret(
        platform: Platform, county_db: Path, tmp_path: Path, port: int) -> None:
    sites = ops.BackupSites(rest_port=port)
    ops.backup_now(platform, "keelung", sites=sites, producer=producer(county_db, tmp_path / "s"))
    password_file = repository.site_backup(platform.state_dir, "primary").password_file
    write_password_file(password_file, "not-the-password-0123")
    with pytest.raises(WrongPassword) as failed:
        ops.backup_now(platform, "keelung", sites=sites, producer=producer(county_db, tmp_path / "s"))
    assert "wrong password" in str(failed.value)
    assert "not-the-password-0123" not in str(failed.value)


_KILLED_ROUND = """
import sys
from pathlib import Path
from sqlalchemy import create_engine
from backup import ops
from provisioning.platform import Platform
from provisioning.spec import DomainType
state, cache, url, port, key = sys.argv[1:6]
platform = Platform(engine=create_engine(url), state_dir=Path(state), cache_dir=Path(cache),
                    domain_type=DomainType.QEMU)
ops.backup_now(platform, "keelung", sites=ops.BackupSites(rest_port=int(port)), key=key,
               producer=sys.argv[6:])
"""


def test_a_worker_killed_mid_snapshot_leaves_one_restore_point_and_no_lock(
        platform: Platform, county_db: Path, tmp_path: Path, port: int) -> None:
    big = tmp_path / "big.db"  # the app's database with 120 MB more: restic takes seconds over it
    big.write_bytes(county_db.read_bytes())
    with sqlite3.connect(big) as connection:
        connection.execute("CREATE TABLE ballast (data BLOB)")
        connection.executemany("INSERT INTO ballast VALUES (randomblob(1048576))", [()] * 120)
    sites = ops.BackupSites(rest_port=port)
    repository.ensure_pair(Restic(cache_dir=tmp_path / "c"), platform.state_dir, "primary", "secondary", port)
    locks = repository.site_backup(platform.state_dir, "primary").repository_dir / "locks"
    worker = subprocess.Popen(
        [sys.executable, "-c", _KILLED_ROUND, str(platform.state_dir), str(platform.cache_dir),
         str(platform.engine.url), str(port), "round-k", *producer(big, tmp_path / "s")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    # restic's backup lock appears once it starts storing (the copy and figures come before it).
    # A lock is written as NAME-tmp-N then renamed: a kill before the rename leaves that partial file
    # (harmless to restic, never a lock it reads), so wait for the lock itself (seen once, 2026-12-04).
    def whole_locks() -> list[Path]:
        return [path for path in locks.iterdir() if "-tmp-" not in path.name]

    while not whole_locks() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else ""
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its restic: kill -9, no clean-up
    worker.wait()
    time.sleep(0.5)
    assert any(locks.iterdir()), "the killed restic left its lock"

    taken = ops.backup_now(platform, "keelung", sites=sites, key="round-k",
                           producer=producer(big, tmp_path / "s"))
    restic = Restic(cache_dir=tmp_path / "c")
    pair = repository.pair(platform.state_dir, "primary", "secondary", port)
    mine = restic.snapshots(pair.primary, tags=["job=round-k"])
    assert len(mine) == 1 and mine[0].id.startswith(taken.snapshot_id)
    assert len(restic.snapshots(pair.offsite, tags=["job=round-k"])) == 1
    assert list(locks.iterdir()) == []
    assert restic.check(pair.primary).ok
    assert verifications.of_tenant(platform.engine, "keelung") == []


def test_a_corrupted_pack_is_found_by_the_daily_check_and_alerts(
        platform: Platform, county_db: Path, tmp_path: Path, port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    from controlplane import backup_metrics, metrics

    sites = ops.BackupSites(rest_port=port)
    ops.backup_now(platform, "keelung", sites=sites, producer=producer(county_db, tmp_path / "s"))
    clean = ops.check_repositories(platform, sites, read_data_subset="100%")
    assert all(result.ok for result in clean.values())
    data = repository.site_backup(platform.state_dir, "secondary").repository_dir / "data"
    packs = sorted((path for path in data.rglob("*") if path.is_file()), key=lambda path: path.stat().st_size)
    damaged = packs[-1]
    damaged.chmod(0o600)
    with damaged.open("r+b") as pack:
        pack.seek(damaged.stat().st_size // 2)
        pack.write(b"\x00not what restic wrote\x00")
    found = ops.check_repositories(platform, sites, read_data_subset="100%")
    assert found["primary"].ok and not found["secondary"].ok
    assert found["secondary"].damaged_packs == (damaged.name,)
    for site, result in found.items():
        backup_metrics.publish_check(site, result.ok, result.errors)
    assert "secondary's repository is damaged" in caplog.text
    metrics.add_registry(backup_metrics.REGISTRY)
    try:
        text = metrics.exposition().decode()
    finally:
        metrics.remove_registry(backup_metrics.REGISTRY)
    assert 'countycloud_backup_repository_check_ok{site="secondary"} 0.0' in text
    assert 'countycloud_backup_repository_check_ok{site="primary"} 1.0' in text
