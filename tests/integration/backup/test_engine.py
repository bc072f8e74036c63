"""The backup engine against real restic (Debian's 0.14) and a real REST server on 127.0.0.1.

Primary repository on local disk, offsite repository at the "secondary site" through `rclone serve
restic`; every check below looks at what restic really stored or returned.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from backup import policy, repository, restserver
from backup.policy import RestorePoint, Retention
from backup.restic import (
    DiskFull,
    Repository,
    RepositoryLocked,
    RepositoryMissing,
    Restic,
    ResticTimeout,
    ServerUnreachable,
    SnapshotNotFound,
    SourceFailed,
    StatsMode,
    WrongPassword,
    write_password_file,
)
from tests.integration.backup.conftest import Sites

pytestmark = pytest.mark.skipif(shutil.which("restic") is None or shutil.which("rclone") is None,
                                reason="restic and rclone are installed by scripts/host-setup.sh")


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def lock_files(repo_dir: Path) -> list[Path]:
    """The repository's lock files (a restic killed while writing one leaves a `-tmp-` file that
    restic does not read as a lock)."""
    return sorted(path for path in (repo_dir / "locks").iterdir() if re.fullmatch(r"[0-9a-f]{64}", path.name))


def test_backup_copy_offsite_and_restore_byte_identical(sites: Sites, tmp_path: Path) -> None:
    restic, pair = sites.restic, sites.pair
    data = random_file(tmp_path / "src" / "county.db", 3_000_000)
    first = restic.backup_paths(pair.primary, [data], tags=["county=penghu"], host="penghu")
    assert first.data_added > 2_900_000 and first.files_new == 1
    with data.open("rb") as source:
        second = restic.backup_stdin(pair.primary, source, filename="penghu.sqlite", tags=["county=penghu"])
    # the same bytes again through --stdin: deduplicated, almost nothing added
    assert second.data_added < 100_000

    copied = restic.copy(pair.offsite, pair.primary)
    assert set(copied.copied) == {first.snapshot_id, second.snapshot_id}
    offsite = restic.snapshots(pair.offsite, tags=["county=penghu"])
    assert sorted(s.original or "" for s in offsite) == sorted(
        s.id for s in restic.snapshots(pair.primary))
    # a second round copies nothing again
    again = restic.copy(pair.offsite, pair.primary)
    assert again.copied == {} and set(again.skipped) == {first.snapshot_id, second.snapshot_id}

    # each offsite copy is found by the primary snapshot it came from
    full_id = {s.short_id: s.id for s in restic.snapshots(pair.primary)}
    offsite_of = {s.original: s.id for s in offsite}
    restored = restic.restore(pair.offsite, offsite_of[full_id[first.snapshot_id]], tmp_path / "out")
    assert (restored.target / str(data).lstrip("/")).read_bytes() == data.read_bytes()
    dumped = restic.dump(pair.offsite, offsite_of[full_id[second.snapshot_id]], "/penghu.sqlite",
                         tmp_path / "dumped.db")
    assert dumped.bytes == data.stat().st_size and dumped.target.read_bytes() == data.read_bytes()
    # the offsite repository really is the one in the secondary's folder, served over REST
    assert pair.offsite.location.startswith(f"rest:http://127.0.0.1:{sites.port}/")
    assert any((pair.offsite_server.root / "countycloud" / "snapshots").iterdir())


def test_forget_and_prune_apply_retention_per_county(sites: Sites, tmp_path: Path) -> None:
    restic, repo = sites.restic, sites.pair.primary
    ids = []
    for round_number in range(5):
        source = random_file(tmp_path / "src" / f"round{round_number}", 400_000)
        with source.open("rb") as stream:
            ids.append(restic.backup_stdin(repo, stream, filename="keelung.sqlite",
                                           tags=["county=keelung"]).snapshot_id)
    other = random_file(tmp_path / "src" / "other", 10_000)
    with other.open("rb") as stream:
        penghu = restic.backup_stdin(repo, stream, filename="penghu.sqlite",
                                     tags=["county=penghu"]).snapshot_id
    raw_before = restic.stats(repo, mode=StatsMode.RAW_DATA).total_size

    result = restic.forget(repo, Retention(keep_last=2), tags=["county=keelung"], prune=True)
    assert len(result.removed) == 3 and len(result.kept) == 2
    left = restic.snapshots(repo)
    assert [s.short_id for s in left if s.tag_value("county") == "keelung"] == ids[-2:]
    # another county's group is untouched by a forget filtered on keelung
    assert [s.short_id for s in left if s.tag_value("county") == "penghu"] == [penghu]
    # prune really deleted the three rounds' data (random, so nothing shared)
    raw_after = restic.stats(repo, mode=StatsMode.RAW_DATA).total_size
    assert raw_before - raw_after > 3 * 350_000


def test_wrong_password_is_a_clear_error(sites: Sites, tmp_path: Path) -> None:
    wrong = write_password_file(tmp_path / "wrong-password", "not-the-password")
    for location in (sites.pair.primary.location, sites.pair.offsite.location):
        with pytest.raises(WrongPassword, match="wrong password or no key found"):
            sites.restic.snapshots(Repository(location, wrong))


def test_missing_repository_and_unreachable_server(sites: Sites, tmp_path: Path) -> None:
    pw = sites.pair.primary.password_file
    with pytest.raises(RepositoryMissing, match="Is there a repository"):
        sites.restic.snapshots(Repository(str(tmp_path / "nothing-here"), pw))
    with pytest.raises(RepositoryMissing):
        sites.restic.snapshots(Repository(f"rest:http://127.0.0.1:{sites.port}/nothing-here", pw))
    restserver.stop(sites.pair.offsite_server)
    with pytest.raises(ServerUnreachable, match="connection refused"):
        sites.restic.snapshots(sites.pair.offsite)
    with pytest.raises(SnapshotNotFound):
        sites.restic.restore(sites.pair.primary, "deadbeef", tmp_path / "out")


def test_corrupted_pack_is_found_by_check_read_data_subset(sites: Sites, tmp_path: Path) -> None:
    restic, pair = sites.restic, sites.pair
    restic.backup_paths(pair.primary, [random_file(tmp_path / "src" / "db", 2_000_000)])
    restic.copy(pair.offsite, pair.primary)
    assert restic.check(pair.offsite, read_data_subset="100%").ok

    packs = sorted((pair.offsite_server.root / "countycloud" / "data").rglob("*"),
                   key=lambda p: p.stat().st_size)
    damaged = packs[-1]  # the big data pack
    damaged.chmod(0o600)
    with damaged.open("r+b") as pack:
        pack.seek(damaged.stat().st_size // 2)
        pack.write(b"\x00not what restic wrote\x00")

    # the structure still checks out: only reading the data finds it
    assert restic.check(pair.offsite).ok
    found = restic.check(pair.offsite, read_data_subset="100%")
    assert not found.ok
    assert found.damaged_packs == (damaged.name,)
    assert any("does not match" in line for line in found.errors)
    # the primary's copy of the same data is intact
    assert restic.check(pair.primary, read_data_subset="100%").ok


def test_rest_server_killed_is_restarted_and_the_copy_catches_up(sites: Sites, tmp_path: Path) -> None:
    restic, pair = sites.restic, sites.pair
    restic.backup_paths(pair.primary, [random_file(tmp_path / "src" / "a", 100_000)])
    restic.copy(pair.offsite, pair.primary)
    first_pid = restserver.pid(pair.offsite_server)
    assert first_pid is not None

    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while restserver.state(pair.offsite_server) is restserver.ServerState.UP and time.monotonic() < deadline:
        time.sleep(0.05)
    assert restserver.state(pair.offsite_server) is restserver.ServerState.DOWN
    # backups keep landing locally while the offsite is down; the copy fails with restic's reason
    for name in ("b", "c"):
        restic.backup_paths(pair.primary, [random_file(tmp_path / "src" / name, 100_000)])
    with pytest.raises(ServerUnreachable):
        restic.copy(pair.offsite, pair.primary)
    primary_points = [RestorePoint(s.id, s.time) for s in restic.snapshots(pair.primary)]

    # the supervisor brings it back (a new process) ...
    stopping = threading.Event()
    restarts: list[int] = []
    supervisor = threading.Thread(
        target=lambda: restarts.append(restserver.supervise(pair.offsite_server, stopping, 0.1)))
    supervisor.start()
    try:
        deadline = time.monotonic() + 15
        while restserver.state(pair.offsite_server) is not restserver.ServerState.UP:
            assert time.monotonic() < deadline, "the supervisor did not restart the REST server"
            time.sleep(0.1)
    finally:
        stopping.set()
        supervisor.join(timeout=10)
    assert restarts == [1]
    assert restserver.pid(pair.offsite_server) not in (None, first_pid)

    # ... and the next copy catches up: nothing of the primary is missing offsite
    missing = policy.to_copy(primary_points, [s.original or "" for s in restic.snapshots(pair.offsite)])
    assert len(missing) == 2
    caught_up = restic.copy(pair.offsite, pair.primary)
    assert len(caught_up.copied) == 2
    offsite_originals = [s.original or "" for s in restic.snapshots(pair.offsite)]
    assert policy.to_copy(primary_points, offsite_originals) == []


def test_start_is_idempotent_and_stop_stops(sites: Sites) -> None:
    server = sites.pair.offsite_server
    running = restserver.pid(server)
    assert restserver.start(server) == running
    assert restserver.ensure_running(server) is False
    assert restserver.stop(server) == running
    assert restserver.state(server) is restserver.ServerState.DOWN and not server.pidfile.exists()
    assert restserver.ensure_running(server) is True


def test_a_port_served_by_another_folders_server_is_refused_by_name(sites: Sites, tmp_path: Path) -> None:
    # Another state folder's server on this site's port: restic would have reached its repository and
    # failed with "wrong password". The start says whose port it is and leaves that server alone.
    ours = sites.pair.offsite_server
    theirs_pid = restserver.pid(ours)
    other = restserver.RestServer(root=tmp_path / "other-state" / "backup", port=ours.port,
                                  pidfile=tmp_path / "other.pid", logfile=tmp_path / "other.log")
    with pytest.raises(restserver.RestServerError) as refused:
        restserver.start(other)
    said = str(refused.value)
    assert f"already served by pid {theirs_pid}" in said
    assert str(ours.root) in said and str(other.root) in said
    assert "COUNTYCLOUD_BACKUP_REST_PORT" in said
    assert restserver.state(ours) is restserver.ServerState.UP and restserver.pid(other) is None
    assert not other.root.exists(), "nothing is made for a server that cannot start"


def _restic_process(restic: Restic, repo: Repository) -> subprocess.Popen[bytes]:
    """A restic backup reading a pipe that stays open: it holds its lock until killed."""
    process = subprocess.Popen(
        restic._argv("backup", ["--stdin", "--stdin-filename", "held"], json_output=True),
        env=restic._env(repo), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert process.stdin is not None
    process.stdin.write(b"some bytes")
    process.stdin.flush()
    return process


def _wait_for_lock(repo_dir: Path) -> None:
    deadline = time.monotonic() + 20
    while not lock_files(repo_dir):
        assert time.monotonic() < deadline, "restic never took its lock"
        time.sleep(0.05)


def test_lock_of_a_killed_restic_is_removed_and_a_live_one_is_kept(sites: Sites, tmp_path: Path) -> None:
    restic, repo = sites.restic, sites.pair.primary
    repo_dir = Path(repo.location)
    restic.backup_paths(repo, [random_file(tmp_path / "src" / "a", 10_000)])

    live = _restic_process(restic, repo)
    try:
        _wait_for_lock(repo_dir)
        # forget needs an exclusive lock: a live holder is reported, never removed
        with pytest.raises(RepositoryLocked) as locked:
            restic.forget(repo, Retention(keep_last=1))
        assert locked.value.holder_pid == live.pid
        unlocked = restic.unlock(repo)
        assert unlocked.removed == () and [lock.pid for lock in unlocked.remaining] == [live.pid]
        assert len(lock_files(repo_dir)) == 1

        live.kill()  # kill -9: restic cannot clean up; its lock stays behind
        live.wait()
        assert len(lock_files(repo_dir)) == 1
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    # the next command finds the lock, sees its process gone, removes it and goes on
    result = restic.forget(repo, Retention(keep_last=1))
    assert len(result.kept) == 1
    assert lock_files(repo_dir) == []


def test_a_reader_without_lock_reads_past_an_exclusive_lock(sites: Sites, tmp_path: Path) -> None:
    """What a reader polling the offsite repository needs (bench/backup_rpo.py): restic 0.14 does not
    wait for a lock, so a locking reader and a round's exclusive `forget` fail each other."""
    restic, repo = replace(sites.restic, clear_stale_locks=False), sites.pair.primary
    source = random_file(tmp_path / "src" / "a", 10_000)
    snapshot = restic.backup_paths(repo, [source]).snapshot_id
    _leave_stale_exclusive_lock(restic, repo)  # as a forget or check holds while it runs
    held = lock_files(Path(repo.location))
    with pytest.raises(RepositoryLocked):
        restic.snapshots(repo)
    [listed] = restic.snapshots(repo, no_lock=True)
    assert listed.id.startswith(snapshot)
    assert restic.dump(repo, snapshot, str(source), tmp_path / "a.out", no_lock=True).bytes == 10_000
    assert lock_files(Path(repo.location)) == held


def _leave_stale_exclusive_lock(restic: Restic, repo: Repository) -> None:
    """`check --read-data` holds an exclusive lock while it reads; killed -9, the lock stays."""
    checker = subprocess.Popen(restic._argv("check", ["--read-data"], json_output=False),
                               env=restic._env(repo), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_lock(Path(repo.location))
    finally:
        checker.kill()
        checker.wait()
    if not lock_files(Path(repo.location)):
        pytest.skip("check finished before it could be killed")


def test_a_stale_exclusive_lock_in_the_source_does_not_stop_the_offsite_copy(
        sites: Sites, tmp_path: Path) -> None:
    restic, pair = sites.restic, sites.pair
    restic.backup_paths(pair.primary, [random_file(tmp_path / "src" / "big", 30_000_000)])
    _leave_stale_exclusive_lock(restic, pair.primary)
    # copy locks its source too (non-exclusive): it meets the lock, whose process is gone, and removes it
    copied = restic.copy(pair.offsite, pair.primary)
    assert len(copied.copied) == 1
    assert lock_files(Path(pair.primary.location)) == []


def test_a_stale_exclusive_lock_does_not_stop_a_backup_from_a_file(sites: Sites, tmp_path: Path) -> None:
    restic, repo = sites.restic, sites.pair.primary
    restic.backup_paths(repo, [random_file(tmp_path / "src" / "big", 30_000_000)])
    _leave_stale_exclusive_lock(restic, repo)
    data = random_file(tmp_path / "src" / "county.db", 200_000)
    with data.open("rb") as source:
        done = restic.backup_stdin(repo, source, filename="county.sqlite")
    # the retry read the file from its start: the whole of it is in the snapshot
    assert done.total_bytes_processed == 200_000
    restic.dump(repo, done.snapshot_id, "/county.sqlite", tmp_path / "back.db")
    assert (tmp_path / "back.db").read_bytes() == data.read_bytes()
    assert lock_files(Path(repo.location)) == []


def test_timeout_interrupts_restic_and_leaves_no_lock(sites: Sites) -> None:
    restic, repo = sites.restic, sites.pair.primary
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"a stream that never ends")
        started = time.monotonic()
        with pytest.raises(ResticTimeout, match="within 3 s"):
            restic.backup_stdin(repo, read_end, filename="stuck", timeout_s=3)
        assert time.monotonic() - started < 15
    finally:
        os.close(read_end)
        os.close(write_end)
    assert lock_files(Path(repo.location)) == []
    assert restic.snapshots(repo) == []


def test_a_failing_producer_leaves_no_snapshot(sites: Sites) -> None:
    restic, repo = sites.restic, sites.pair.primary
    producer = ["sh", "-c", "head -c 300000 /dev/urandom; echo 'dump failed half way' >&2; exit 3"]
    with pytest.raises(SourceFailed, match="dump failed half way"):
        restic.backup_command(repo, producer, filename="half.dump")
    assert restic.snapshots(repo) == []
    assert lock_files(Path(repo.location)) == []
    ok = restic.backup_command(repo, ["sh", "-c", "head -c 300000 /dev/urandom"], filename="whole.dump")
    assert ok.total_bytes_processed == 300_000
    assert [s.short_id for s in restic.snapshots(repo)] == [ok.snapshot_id]


def test_disk_full_is_reported(tmp_path: Path, restic_runner: Restic) -> None:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        repo = Repository(str(mount_point / "repo"), write_password_file(tmp_path / "pw", "pw"))
        restic_runner.init(repo)
        big = random_file(tmp_path / "src" / "big", 8_000_000)
        with pytest.raises(DiskFull, match="no space left on device"):
            restic_runner.backup_paths(repo, [big])
        assert restic_runner.snapshots(repo) == []
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_two_starts_at_once_leave_one_server_named_by_its_pid_file(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.integration.backup.conftest import free_port

    backup = repository.site_backup(tmp_path / "state", "secondary")
    server = backup.rest_server(free_port())
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            started = [done.result() for done in [pool.submit(restserver.start, server) for _ in range(4)]]
        assert len(set(started)) == 1  # one server, every caller told its pid
        assert restserver.pid(server) == started[0] and restserver.state(server) is restserver.ServerState.UP
    finally:
        restserver.stop(server)
