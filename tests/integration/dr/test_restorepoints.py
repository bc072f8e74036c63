"""Restore points for a failover with real restic (no VM): a county's database stored with its
figures in the secondary's repository is found, verified and laid on a new data disk; a point whose
figures do not match what it holds is refused."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from backup import consistent, figures, repository, restored
from backup.restic import Restic
from dr import restorepoints
from dr.restorepoints import PointError
from provisioning.sites import SitePaths, site_paths
from tenant_app.migrations import upgrade


@dataclass
class Platform:
    state_dir: Path

    def site(self, name: str) -> SitePaths:
        return site_paths(self.state_dir, name)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Platform, Path]:
    """keelung's database (migrated, one voucher-less ledger) in the secondary's repository."""
    platform = Platform(tmp_path / "state")
    backup = repository.site_backup(platform.state_dir, "secondary")
    repository.ensure_password(backup)
    restic = Restic(cache_dir=backup.cache_dir, timeout_s=120)
    repository.ensure_repository(restic, backup.local())
    database = tmp_path / "keelung.db"
    upgrade(f"sqlite:///{database}")
    tags = figures.to_tags(figures.read(database))
    consistent.store(restic, backup.local(), database, "keelung", tags=tags)
    return platform, database


def test_a_stored_database_is_found_verified_and_laid_on_a_new_data_disk(stored: tuple[Platform, Path],
                                                                          tmp_path: Path) -> None:
    platform, database = stored
    found = restorepoints.list_points(platform, "secondary")  # type: ignore[arg-type]
    assert list(found) == ["keelung"] and len(found["keelung"]) == 1
    point = restorepoints.choose(found["keelung"], None)
    assert point.recorded, "the figures were recorded with the point"
    workdir = tmp_path / "work"
    workdir.mkdir()
    disk = restorepoints.restore(platform, "secondary", "keelung-accounting-1", point, 64,  # type: ignore[arg-type]
                                 workdir)
    assert disk == platform.site("secondary").disks / "restored" / f"keelung-accounting-1-{point.short}.img"
    back = restored.read_database(disk, tmp_path / "back.db")
    assert figures.read(back) == figures.read(database)
    with sqlite3.connect(back) as copy, sqlite3.connect(database) as original:
        tables = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        assert copy.execute(tables).fetchall() == original.execute(tables).fetchall()
    # A rerun (a killed attempt) keeps the disk it made.
    assert restorepoints.restore(platform, "secondary", "keelung-accounting-1", point, 64,  # type: ignore[arg-type]
                                 workdir) == disk


def test_a_point_whose_figures_differ_is_refused(stored: tuple[Platform, Path], tmp_path: Path) -> None:
    platform, _ = stored
    [point] = restorepoints.list_points(platform, "secondary")["keelung"]  # type: ignore[arg-type]
    lying = point.model_copy(update={"recorded": {**point.recorded, "vouchers": "999"}})
    with pytest.raises(PointError, match="does not verify"):
        restorepoints.verified_database(platform, "secondary", lying, tmp_path)  # type: ignore[arg-type]
