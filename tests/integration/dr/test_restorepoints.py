"""Restore points for a failover with real restic (no VM): a county's database stored with its
figures in the secondary's repository is found, restored through backup's public operation onto a
new data disk, and a point whose figures do not match what it holds is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup import consistent, figures, repository, restored, verifications
from backup.restic import Restic
from dr import restorepoints
from dr.restorepoints import PointError
from inventory import queries
from inventory.db import make_engine, migrate, session_scope
from inventory.declare import apply
from inventory.enums import Lifecycle
from inventory.loader import load_text
from provisioning.platform import Platform
from provisioning.spec import DomainType
from tenant_app.migrations import upgrade
from tests.unit.dr.test_fence import DECLARATION


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        apply(session, load_text(DECLARATION))
    with session_scope(engine) as session:
        vm = queries.get_vm(session, "keelung-accounting-1")
        queries.place_vm(session, vm)
        queries.record_vm_identity(vm, "00000000-0000-4000-8000-000000000001", "52:54:00:00:00:01")
        queries.set_status(vm, Lifecycle.ACTIVE, actor="test")
    yield Platform(engine=engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                   domain_type=DomainType.QEMU)
    engine.dispose()


def store(platform: Platform, database: Path, tags: list[str]) -> None:
    backup = repository.site_backup(platform.state_dir, "secondary")
    repository.ensure_password(backup)
    restic = Restic(cache_dir=backup.cache_dir, timeout_s=120)
    repository.ensure_repository(restic, backup.local())
    consistent.store(restic, backup.local(), database, "keelung", tags=tags)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    database = tmp_path / "keelung.db"
    upgrade(f"sqlite:///{database}")
    return database


def test_a_stored_database_is_found_and_laid_on_a_new_data_disk(platform: Platform, database: Path,
                                                                tmp_path: Path) -> None:
    store(platform, database, figures.to_tags(figures.read(database)))
    found = restorepoints.list_points(platform, "secondary")
    assert list(found) == ["keelung"] and len(found["keelung"]) == 1
    point = restorepoints.choose(found["keelung"], None)
    assert point.recorded and not point.verified
    workdir = tmp_path / "work"
    workdir.mkdir()
    disk = restorepoints.restore(platform, "secondary", "keelung-accounting-1", point, 64, workdir)
    disks = platform.site("secondary").disks
    assert disk == restorepoints.restored_disk(disks, "keelung-accounting-1", point)
    back = restored.read_database(disk, tmp_path / "back.db")
    assert figures.read(back) == figures.read(database)
    with sqlite3.connect(back) as copy, sqlite3.connect(database) as original:
        tables = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        assert copy.execute(tables).fetchall() == original.execute(tables).fetchall()
    # A rerun (a killed attempt) keeps the disk it made.
    assert restorepoints.restore(platform, "secondary", "keelung-accounting-1", point, 64, workdir) == disk
    # A verification recorded for it shows in the list.
    verifications.record(platform.engine, tenant="keelung", snapshot_id=point.snapshot_id, original_id=None,
                         site="secondary", ok=True, detail="", job_id=None)
    assert restorepoints.list_points(platform, "secondary")["keelung"][0].verified


def test_a_point_whose_figures_differ_is_refused(platform: Platform, database: Path, tmp_path: Path) -> None:
    lying = [tag if not tag.startswith("fig-vouchers=") else "fig-vouchers=999"
             for tag in figures.to_tags(figures.read(database))]
    assert lying != figures.to_tags(figures.read(database))
    store(platform, database, lying)
    [point] = restorepoints.list_points(platform, "secondary")["keelung"]
    with pytest.raises(PointError, match="does not verify"):
        restorepoints.restore(platform, "secondary", "keelung-accounting-1", point, 64, tmp_path)
    assert not list((platform.site("secondary").disks / "restored").glob("*.img"))
