"""backup/ops.py, the public operations DR builds on, with real restic, a real REST server and real
mkfs.ext4 / debugfs: a backup taken now (the app's own online-backup program run on a county database
made by the app, in place of the guest's copy over SSH), its restore points listed from both
repositories, restored onto a new data disk at the secondary, and marked verified."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from backup import consistent, figures, ops, repository, restored
from backup.restic import Restic, SnapshotNotFound
from provisioning.platform import Platform
from tests.integration.backup.conftest import county_platform, free_port, producer, stop_rest_servers
from tests.unit.provisioning.test_steps_lists import demo_db, engine  # noqa: F401 (fixtures)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def platform(engine: Engine, tmp_path: Path, port: int,  # noqa: F811
             made_repositories: Path) -> Iterator[Platform]:
    platform = county_platform(engine, tmp_path, made_repositories)
    yield platform
    stop_rest_servers(platform, {"secondary": port})


def test_backup_now_list_restore_to_disk_and_verify(platform: Platform, county_db: Path, tmp_path: Path,
                                                    port: int) -> None:
    sites = ops.BackupSites(primary="primary", offsite="secondary", rest_port=port)
    assert ops.sites_of(platform.engine, "keelung", port) == sites
    database = tmp_path / "live.db"
    shutil.copy(county_db, database)
    expected = figures.read(database)

    taken = ops.backup_now(platform, "keelung", sites=sites, key="round-1",
                           producer=producer(database, tmp_path / "scratch"))
    assert not taken.reused and taken.figures == expected.tags()
    assert taken.offsite.startswith("written with the snapshot")  # both repositories at once
    again = ops.backup_now(platform, "keelung", sites=sites, key="round-1",
                           producer=producer(database, tmp_path / "scratch"))
    assert again.reused and again.snapshot_id == taken.snapshot_id  # the same key: no second point

    listed = ops.restore_points(platform, "keelung", sites)
    assert listed.unreachable == {}
    [point] = listed.points
    assert point.snapshot_id.startswith(taken.snapshot_id)
    assert point.primary and point.offsite and point.offsite_id and point.offsite_id != point.snapshot_id
    assert point.bytes == database.stat().st_size
    assert point.figures == expected.tags()
    assert not point.verified and point.verified_at is None

    # at the secondary, from its own repository (by path), asked for by the primary's id
    disk = ops.restore_to_disk(platform, "keelung", site="secondary", snapshot=point.snapshot_id[:8],
                               sites=sites)
    assert disk.made and disk.snapshot_id == point.offsite_id and disk.original_id == point.snapshot_id
    assert disk.path.is_relative_to(platform.site("secondary").disks)
    assert figures.read(restored.read_database(disk.path, tmp_path / "back.db")) == expected
    rerun = ops.restore_to_disk(platform, "keelung", site="secondary", snapshot=point.snapshot_id[:8],
                                sites=sites)
    assert not rerun.made and rerun.path == disk.path

    ops.record_verification(platform.engine, "keelung", disk, site="secondary", ok=True, job_id="v-1")
    ops.record_verification(platform.engine, "keelung", disk, site="secondary", ok=True, job_id="v-1")
    [verified] = ops.restore_points(platform, "keelung", sites).points
    assert verified.verified and verified.verified_at is not None


def test_a_failed_verification_leaves_the_point_unverified_and_a_newer_success_counts(
        platform: Platform, county_db: Path, tmp_path: Path, port: int) -> None:
    sites = ops.BackupSites(rest_port=port)
    taken = ops.backup_now(platform, "keelung", sites=sites, producer=producer(county_db, tmp_path / "s"))
    [point] = ops.restore_points(platform, "keelung", sites).points
    assert point.snapshot_id.startswith(taken.snapshot_id)
    restic = Restic(cache_dir=tmp_path / "c")
    [snapshot] = restic.snapshots(repository.site_backup(platform.state_dir, "primary").local())
    ops.record_verification(platform.engine, "keelung", snapshot, site="secondary", ok=False, detail="boom")
    assert not ops.restore_points(platform, "keelung", sites).points[0].verified
    ops.record_verification(platform.engine, "keelung", snapshot, site="secondary", ok=True)
    assert ops.restore_points(platform, "keelung", sites).points[0].verified


def test_a_lost_primary_repository_still_lists_and_restores_the_offsite_points(
        platform: Platform, county_db: Path, tmp_path: Path, port: int) -> None:
    sites = ops.BackupSites(rest_port=port)
    ops.backup_now(platform, "keelung", sites=sites, producer=producer(county_db, tmp_path / "s"))
    shutil.rmtree(repository.site_backup(platform.state_dir, "primary").repository_dir)

    listed = ops.restore_points(platform, "keelung", sites)
    assert set(listed.unreachable) == {"primary"}
    [point] = listed.points
    assert point.offsite and not point.primary and point.figures == figures.read(county_db).tags()
    disk = ops.restore_to_disk(platform, "keelung", site="secondary", sites=sites)
    assert disk.made and disk.snapshot_id == point.snapshot_id
    with pytest.raises(SnapshotNotFound):
        ops.restore_to_disk(platform, "keelung", site="secondary", snapshot="0123abcd", sites=sites)


def test_a_point_whose_figures_differ_is_refused_and_no_disk_is_made(
        platform: Platform, county_db: Path, tmp_path: Path, port: int) -> None:
    sites = ops.BackupSites(rest_port=port)
    restic = Restic(cache_dir=tmp_path / "c")
    pair = repository.ensure_pair(restic, platform.state_dir, "primary", "secondary", port)
    wrong = figures.read(county_db).model_copy(update={"vouchers": 1})
    consistent.store(restic, pair.primary, county_db, "keelung", tags=figures.to_tags(wrong))
    with pytest.raises(figures.FiguresError, match="vouchers: recorded 1"):
        ops.restore_to_disk(platform, "keelung", site="primary", from_site="primary", sites=sites)
    assert not list((platform.site("primary").disks / "restored").glob("*.img"))
