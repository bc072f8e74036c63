"""Restore points for a failover: which one each county comes back from, and its database on a new
data disk at the site it comes back at.

The offsite repository lives at the secondary site, so the site a county fails over to reads it by
path (its own disks), never through the failed site. `choose` is pure; `list_points` and `restore`
are the edge (restic through backup's own modules).

The disk is made by backup's public operation (backup.ops.restore_to_disk: `restic dump`, SQLite
integrity_check, the figures recorded with the point compared with those restored, a new ccdata
disk). A failback's final copy is no restic point: it is staged in the job's folder already checked,
and laid on its disk here (backup.restored.make).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from backup import consistent, figures, ops, replication, repository, restored, verifications
from backup.platformdb import PlatformDbError
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
    verified: bool = False  # a verification of it (backup.verifications) succeeded before

    @property
    def short(self) -> str:
        return self.snapshot_id[:8] if not self.replicated else f"r{self.snapshot_id[-7:]}"

    @property
    def replicated(self) -> bool:
        """A state of the replicated tier's stream (Litestream), not a restic snapshot."""
        return self.snapshot_id.startswith(REPLICA_PREFIX)

    @property
    def txid(self) -> int:
        return int(self.snapshot_id.removeprefix(REPLICA_PREFIX), 16)


# A replicated state's id: the prefix and its last transaction id (16 hex digits).
REPLICA_PREFIX = "replica-"


def replica_point(county: str, txid: int, at: float) -> Point:
    return Point(county=county, snapshot_id=f"{REPLICA_PREFIX}{txid:016x}", taken_at=at)


def prefer_replicated(chosen: Point, replicated: Point | None) -> tuple[Point, list[Point]]:
    """Pure: the replicated state when it is newer than the chosen backup point (the issue: "the
    replicated tier's newest state, else the newest offsite backup that verified"), with the backup
    point to fall back to; else the backup point alone."""
    if replicated is None or replicated.taken_at <= chosen.taken_at:
        return chosen, []
    return replicated, [chosen]


def county_of(snapshot: Snapshot) -> str | None:
    return snapshot.tag_value(consistent.COUNTY_TAG)


def points_by_county(snapshots: Iterable[Snapshot], verified: Collection[str] = ()) -> dict[str, list[Point]]:
    """Each county's restore points, oldest first; `verified`: ids (a copy's or its original's) of
    points a verification proved."""
    found: dict[str, list[Point]] = {}
    for snapshot in snapshots:
        county = county_of(snapshot)
        if county is None:
            continue
        found.setdefault(county, []).append(Point(
            county=county, snapshot_id=snapshot.id, taken_at=snapshot.time.timestamp(),
            recorded=figures.from_tags(snapshot.tags),
            verified=snapshot.id in verified or (snapshot.original or "") in verified))
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


def check_repository(platform: Platform, site: str) -> None:
    """`site`'s own repository and its password, both needed to list and restore the points, checked
    before anything is done: a control plane started at the DR site from the platform database's
    offsite copy has them only if the DR site kept them (docs/dr.md, "The control plane's own
    survival")."""
    backup = repository.site_backup(platform.state_dir, site)
    if not (backup.repository_dir / "config").is_file():
        raise PointError(f"no restic repository at {backup.repository_dir}: {site} holds no restore point")
    if not backup.password_file.is_file():
        raise PointError(f"no password file {backup.password_file} for {site}'s repository: at the DR site "
                         "it comes from the DR safe (one line, mode 0600; or `countycloud platform recover "
                         "--password-file`)")


def list_points(platform: Platform, site: str) -> dict[str, list[Point]]:
    """Every county's restore points in `site`'s repository (one restic call for all of them), read by
    path: the site a county fails over to holds the offsite copies itself."""
    restic, backup = _restic(platform, site)
    # Without restic's lock: a reader, and restic 0.14 does not wait for a lock, so a listing met
    # by a round's `forget` (it holds the exclusive lock) would fail the failover outright; a point
    # forgotten meanwhile fails its restore and the one before it is tried. The lock is also a file
    # written and removed in the repository: 0.2-0.3 s of the 0.6-0.8 s listing (measured).
    snapshots = restic.snapshots(backup.local(), no_lock=True)
    proven = {proof_id for county in {county_of(s) for s in snapshots} if county
              for proof in verifications.of_tenant(platform.engine, county) if proof.ok
              for proof_id in (proof.snapshot_id, proof.original_id) if proof_id}
    return points_by_county(snapshots, proven)


def staged_paths(workdir: Path, point: Point) -> tuple[Path, Path]:
    """Where a point's database is fetched to, and the marker saying it verified."""
    stem = f"{point.county}-{point.short}"
    return workdir / f"{stem}-{consistent.DATABASE_FILENAME}", workdir / f"{stem}.verified"


def restored_disk(site_disks: Path, vm_name: str, point: Point) -> Path:
    """Where a point's data disk is made at a site: named by VM and point, so a rerun finds it."""
    return site_disks / "restored" / f"{vm_name}-{point.short}.img"


def restore(platform: Platform, site: str, vm_name: str, point: Point, size_mib: int, workdir: Path) -> Path:
    """A new data disk at `site` holding the point's database (kept if a killed attempt made it): a
    database staged in `workdir` (a failback's final copy), else the restic point through
    backup.ops.restore_to_disk from `site`'s own repository. PointError when it does not verify."""
    if point.replicated:
        return _restore_replicated(platform, site, vm_name, point, size_mib)
    staged, marker = staged_paths(workdir, point)
    if marker.exists() and staged.exists():
        disk = restored_disk(platform.site(site).disks, vm_name, point)
        if not disk.exists():
            restored.make(disk, size_mib, staged)
        return disk
    try:
        done = ops.restore_to_disk(platform, point.county, site=site, snapshot=point.snapshot_id,
                                   from_site=site, sites=ops.BackupSites(primary=site, offsite=site),
                                   vm_name=vm_name, size_mib=size_mib)
    except (figures.FiguresError, PlatformDbError) as error:  # figures differ, or the copy is damaged
        raise PointError(f"{point.county}: restore point {point.short} does not verify: {error}") from error
    return done.path


def newest_replicated(platform: Platform, county: str, site: str, before: float) -> Point | None:
    """The county's newest replicated state held at `site` written before the failure, if any."""
    state = replication.newest(platform, county, site, before=datetime.fromtimestamp(before, UTC))
    return None if state is None else replica_point(county, state.txid, state.at.timestamp())


def _restore_replicated(platform: Platform, site: str, vm_name: str, point: Point, size_mib: int) -> Path:
    try:
        done = replication.restore_to_disk(
            platform, point.county, site=site, replica_site=site, vm_name=vm_name, size_mib=size_mib,
            before=datetime.fromtimestamp(point.taken_at, UTC))
    except (replication.ReplicationError, PlatformDbError) as error:
        raise PointError(f"{point.county}: replicated state {point.short} does not restore: "
                         f"{error}") from error
    if done.state.txid != point.txid:
        raise PointError(f"{point.county}: replicated state {point.short} is not the one found "
                         f"({done.state.txid:016x})")
    return done.path


def as_json(points: Mapping[str, Point]) -> dict[str, dict[str, object]]:
    return {county: {"snapshot": p.snapshot_id, "taken_at": datetime.fromtimestamp(p.taken_at).isoformat()}
            for county, p in points.items()}
