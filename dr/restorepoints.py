"""Restore points for a failover: which one each county comes back from, and its database on a new
data disk at the site it comes back at.

The offsite repository lives at the secondary site, so the site a county fails over to reads it by
path (its own disks), never through the failed site. `choose` is pure; `list_points` and `restore`
are the edge (restic through backup's own modules).

Until backup's public restore operations land, this reads the repository as backup/steps.py's
restore does: `restic dump` of the snapshot, SQLite integrity_check, the figures recorded with the
snapshot compared with those of the restored file, then backup.restored.make for the disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from backup import consistent, figures, repository, restored
from backup.platformdb import CopyCheck, check_sqlite
from backup.restic import Restic, Snapshot
from provisioning.platform import Platform


class PointError(RuntimeError):
    """No usable restore point for a county, or one that does not verify."""


class Point(BaseModel):
    """One restore point of one county, as the failover records it."""

    model_config = ConfigDict(frozen=True)
    county: str
    snapshot_id: str
    taken_at: float  # epoch seconds: when the database copy was taken at the primary
    recorded: dict[str, str] = {}  # the figures recorded with it

    @property
    def short(self) -> str:
        return self.snapshot_id[:8]


def county_of(snapshot: Snapshot) -> str | None:
    return snapshot.tag_value(consistent.COUNTY_TAG)


def points_by_county(snapshots: Iterable[Snapshot]) -> dict[str, list[Point]]:
    """Each county's restore points, oldest first."""
    found: dict[str, list[Point]] = {}
    for snapshot in snapshots:
        county = county_of(snapshot)
        if county is None:
            continue
        found.setdefault(county, []).append(Point(
            county=county, snapshot_id=snapshot.id, taken_at=snapshot.time.timestamp(),
            recorded=figures.from_tags(snapshot.tags)))
    return {county: sorted(points, key=lambda p: p.taken_at) for county, points in found.items()}


def choose(points: Sequence[Point], wanted: str | None, *, before: float | None = None) -> Point:
    """The point asked for (full or short id), else the newest taken at or before `before` (the site
    failure: a point is never newer than the data it is meant to hold). PointError says what exists."""
    if not points:
        raise PointError("no restore point at the offsite repository; take a backup first")
    if wanted is not None:
        for point in points:
            if point.snapshot_id.startswith(wanted):
                return point
        raise PointError(f"no restore point {wanted} (have {', '.join(p.short for p in points[-5:])})")
    usable = [point for point in points if before is None or point.taken_at <= before]
    if not usable:
        raise PointError("every restore point is newer than the failure; name one")
    return max(usable, key=lambda point: point.taken_at)


def fallbacks(points: Sequence[Point], chosen: Point) -> list[Point]:
    """The points to try after `chosen` fails to verify: older ones, newest first."""
    return sorted((p for p in points if p.taken_at < chosen.taken_at), key=lambda p: -p.taken_at)


# --- edge ----------------------------------------------------------------------------------------

def _restic(platform: Platform, site: str) -> tuple[Restic, repository.SiteBackup]:
    backup = repository.site_backup(platform.state_dir, site)
    return Restic(cache_dir=backup.cache_dir), backup


def list_points(platform: Platform, site: str) -> dict[str, list[Point]]:
    """Every county's restore points in `site`'s repository (one restic call for all of them)."""
    restic, backup = _restic(platform, site)
    return points_by_county(restic.snapshots(backup.local()))


def staged_paths(workdir: Path, point: Point) -> tuple[Path, Path]:
    """Where a point's database is fetched to, and the marker saying it verified."""
    stem = f"{point.county}-{point.short}"
    return workdir / f"{stem}-{consistent.DATABASE_FILENAME}", workdir / f"{stem}.verified"


def verified_database(platform: Platform, site: str, point: Point, workdir: Path) -> Path:
    """The point's database in `workdir`, integrity-checked and with the figures it recorded; reused
    when a killed attempt already fetched and checked it."""
    target, done_marker = staged_paths(workdir, point)
    if done_marker.exists() and target.exists():
        return target
    restic, backup = _restic(platform, site)
    restic.dump(backup.local(), point.snapshot_id, f"/{consistent.DATABASE_FILENAME}", target)
    check_sqlite(target, CopyCheck.FULL)
    differ = figures.differences(point.recorded, figures.read(target))
    if differ:
        raise PointError(f"{point.county}: restore point {point.short} does not verify: {'; '.join(differ)}")
    done_marker.touch()
    return target


def restored_disk(site_disks: Path, vm_name: str, point: Point) -> Path:
    """Where a point's data disk is made at a site: named by VM and point, so a rerun finds it."""
    return site_disks / "restored" / f"{vm_name}-{point.short}.img"


def restore(platform: Platform, site: str, vm_name: str, point: Point, size_mib: int, workdir: Path) -> Path:
    """A new data disk at `site` holding the point's database (kept if a killed attempt made it)."""
    disk = restored_disk(platform.site(site).disks, vm_name, point)
    if not disk.exists():
        database = verified_database(platform, site, point, workdir)
        restored.make(disk, size_mib, database)
    return disk


def as_json(points: Mapping[str, Point]) -> dict[str, dict[str, object]]:
    return {county: {"snapshot": p.snapshot_id, "taken_at": datetime.fromtimestamp(p.taken_at).isoformat()}
            for county, p in points.items()}
