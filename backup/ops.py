"""Public backup operations, for the control plane and for DR: each takes the county and the sites it
acts on, and is idempotent.

- `restore_points`: a county's restore points (time, size, offsite or not, verified or not, figures),
  the primary's and the offsite's repositories merged by restic's `original` link.
- `restore_to_disk`: restore point P of county C onto a NEW data disk at site S; returns its path
  (a rerun returns the disk already made).
- `backup_now`: a backup round of county C now (the job's own steps run inline; `key` makes a rerun
  find the restore point an earlier attempt made instead of making a second).
- `record_verification` / verified state: backup/verifications.py.

A site reads its own repository by path; another site's through that site's REST server.
"""

from __future__ import annotations

import shutil
import time
import uuid as uuidlib
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from backup import (
    consistent,
    figures,
    pairing,
    policy,
    repository,
    restored,
    restports,
    restserver,
    steps,
    verifications,
)
from backup.figures import Figures
from backup.platformdb import CopyCheck, check_sqlite
from backup.policy import ProtectionTier
from backup.restic import (
    CheckResult,
    CopyResult,
    Repository,
    Restic,
    ResticError,
    Snapshot,
    SnapshotNotFound,
)
from backup.steps import DEFAULT_REST_PORT, SIZE_TAG
from inventory import queries
from inventory.db import session_scope
from inventory.jobs import StepContext, StepResult
from provisioning import records
from provisioning.platform import Platform


@dataclass(frozen=True)
class BackupSites:
    """Where a county's backups are: `primary` writes each round (where the county runs), `offsite`
    holds the copies; the offsite's REST server listens on `rest_port` (that site's own port:
    backup/restports.py)."""

    primary: str = "primary"
    offsite: str = "secondary"
    rest_port: int = DEFAULT_REST_PORT


def rest_ports(engine: Engine, base: int = DEFAULT_REST_PORT,
               declared: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every declared site's REST port (backup/restports.py: `base` is the secondary's)."""
    with session_scope(engine) as session:
        places = [restports.SitePlace(site.name, site.role) for site in queries.list_sites(session)]
    return restports.rest_ports(places, base, declared or {})


def sites_of(engine: Engine, tenant: str, rest_port: int = DEFAULT_REST_PORT,
             ports: Mapping[str, int] | None = None) -> BackupSites:
    """The county's own pair: the site it runs at, and the other one as offsite, with the offsite's
    REST port (`rest_port` is the base the sites' ports derive from, `ports` those set by site)."""
    with session_scope(engine) as session:
        current = queries.get_tenant(session, tenant).current_site.name
        places = [restports.SitePlace(site.name, site.role) for site in queries.list_sites(session)]
    others = [place.name for place in places if place.name != current]
    if not others:
        raise RuntimeError(f"tenant {tenant} runs at {current} and there is no other site to copy to")
    port = restports.port_of(restports.rest_ports(places, rest_port, ports or {}), others[0])
    return BackupSites(primary=current, offsite=others[0], rest_port=port)


def restic_at(platform: Platform, site: str) -> Restic:
    """restic as a site's control plane runs it (its own cache)."""
    return steps._restic(platform, site)


def reach(platform: Platform, repository_site: str, from_site: str, rest_port: int) -> Repository:
    """`repository_site`'s repository as seen from `from_site`: by path at home, else through the
    REST server (started if it is down: the platform supervises it, this only spares a wait)."""
    backup = repository.site_backup(platform.state_dir, repository_site)
    if repository_site == from_site:
        return backup.local()
    restserver.ensure_running(backup.rest_server(rest_port))
    return backup.remote(rest_port)


# --- restore points ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RestorePointInfo:
    snapshot_id: str  # the primary's snapshot id; the offsite copy's when only the offsite holds it
    offsite_id: str | None  # the copy's id in the offsite repository
    taken_at: datetime
    bytes: int | None  # the database's size (None for a point made before sizes were recorded)
    primary: bool  # held in the primary's repository
    offsite: bool  # held in the offsite repository
    verified: bool  # the newest verification of it succeeded
    verified_at: datetime | None
    figures: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {"snapshot_id": self.snapshot_id, "short_id": self.snapshot_id[:8],
                "offsite_id": self.offsite_id, "taken_at": self.taken_at.isoformat(),
                "bytes": self.bytes, "primary": self.primary, "offsite": self.offsite,
                "verified": self.verified,
                "verified_at": self.verified_at.isoformat() if self.verified_at else None,
                "figures": dict(self.figures)}


@dataclass(frozen=True)
class RestorePoints:
    tenant: str
    sites: BackupSites
    points: list[RestorePointInfo]  # oldest first
    unreachable: dict[str, str] = field(default_factory=dict)  # site -> why its repository was not read


def merge_points(primary: Sequence[Snapshot], offsite: Sequence[Snapshot],
                 proofs: Sequence[verifications.Verification]) -> list[RestorePointInfo]:
    """Pure: one entry per restore point, the offsite snapshot paired with the primary's it holds
    (by `original` for a copy, by the job for one written with it: backup/pairing.py)."""
    copies = pairing.partners(primary, offsite)
    paired: set[str] = set()
    points = []
    for snapshot in primary:
        copy = copies.get(snapshot.id)
        if copy is not None:
            paired.add(copy.id)
        points.append(_point(snapshot, copy, proofs, in_primary=True))
    points += [_point(snapshot, snapshot, proofs, in_primary=False)
               for snapshot in offsite if snapshot.id not in paired]
    return sorted(points, key=lambda point: point.taken_at)


def _point(snapshot: Snapshot, copy: Snapshot | None, proofs: Sequence[verifications.Verification],
           *, in_primary: bool) -> RestorePointInfo:
    proof = verifications.latest_for(proofs, snapshot.id)
    if proof is None and copy is not None:
        proof = verifications.latest_for(proofs, copy.id)
    size = snapshot.tag_value(SIZE_TAG)
    return RestorePointInfo(
        snapshot_id=snapshot.id, offsite_id=copy.id if copy else None, taken_at=snapshot.time,
        bytes=int(size) if size and size.isdigit() else None, primary=in_primary, offsite=copy is not None,
        verified=bool(proof and proof.ok), verified_at=proof.verified_at if proof else None,
        figures=figures.from_tags(snapshot.tags))


def restore_points(platform: Platform, tenant: str, sites: BackupSites | None = None) -> RestorePoints:
    """A county's restore points in both repositories, read from the primary site's side. A repository
    that cannot be read (its site lost, its server down) is named in `unreachable`, not an error."""
    sites = sites or sites_of(platform.engine, tenant)
    restic = steps._restic(platform, sites.primary)
    tag = [consistent.county_tag(tenant)]
    found: dict[str, list[Snapshot]] = {}
    unreachable: dict[str, str] = {}
    for site in (sites.primary, sites.offsite):
        try:
            found[site] = restic.snapshots(reach(platform, site, sites.primary, sites.rest_port), tags=tag)
        except (ResticError, OSError, RuntimeError) as error:
            unreachable[site] = str(error)[:500]
            found[site] = []
    points = merge_points(found[sites.primary], found[sites.offsite],
                          verifications.of_tenant(platform.engine, tenant))
    return RestorePoints(tenant, sites, points, unreachable)


def find_point(snapshots: Sequence[Snapshot], wanted: str | None, *,
               at_or_before: datetime | None = None) -> Snapshot:
    """The snapshot asked for: by its id or its source's (`original`, so a primary id finds its
    offsite copy), or the newest taken at or before a time, or the newest."""
    return find_held(snapshots, wanted, at_or_before=at_or_before)[0]


def find_held(snapshots: Sequence[Snapshot], wanted: str | None, *, at_or_before: datetime | None = None,
              primary: Callable[[], list[Snapshot]] | None = None) -> tuple[Snapshot, str | None]:
    """find_point, and the primary's id of the point: a point written to the offsite with its
    primary's (no `original`) is found by the primary's id through the primary's own list
    (`primary`, read only then: steps.choose_held)."""
    if at_or_before is not None:
        snapshots = [snapshot for snapshot in snapshots if snapshot.time <= at_or_before]
        if not snapshots:
            raise SnapshotNotFound("restore", f"no restore point at or before {at_or_before.isoformat()}")
    return steps.choose_held(list(snapshots), wanted, primary)


# --- restore onto a new data disk --------------------------------------------------------------

@dataclass(frozen=True)
class RestoredDisk:
    path: Path
    snapshot_id: str
    original_id: str | None
    taken_at: datetime
    figures: dict[str, str]  # as recorded with the point (and found on the restored database)
    made: bool  # False: the disk was already there from an earlier call


def restored_disk_path(platform: Platform, site: str, vm_name: str, snapshot_id: str) -> Path:
    return platform.site(site).disks / "restored" / f"{vm_name}-{snapshot_id[:8]}.img"


def restore_to_disk(platform: Platform, tenant: str, *, site: str, snapshot: str | None = None,
                    at_or_before: datetime | None = None, from_site: str | None = None,
                    sites: BackupSites | None = None, vm_name: str | None = None,
                    size_mib: int | None = None) -> RestoredDisk:
    """Restore point `snapshot` (id, or the newest at or before a time, or the newest) of `tenant` onto
    a NEW ccdata data disk at `site`, read from `from_site`'s repository (default: the offsite one).
    The database is checked (integrity_check) and its figures compared with those recorded before the
    disk is made; the disk is named by VM and restore point, and a rerun returns the one already made.
    Attaching it to a VM is the caller's (provisioning.vm)."""
    sites = sites or sites_of(platform.engine, tenant)
    source_site = from_site or sites.offsite
    restic = steps._restic(platform, site)
    repo = reach(platform, source_site, site, sites.rest_port)
    tags = [consistent.county_tag(tenant)]

    def primary() -> list[Snapshot]:  # the primary's own list, by path: where its control plane is
        return steps._restic(platform, sites.primary).snapshots(
            reach(platform, sites.primary, sites.primary, sites.rest_port), tags=tags)

    chosen, original_id = find_held(restic.snapshots(repo, tags=tags), snapshot, at_or_before=at_or_before,
                                    primary=None if source_site == sites.primary else primary)
    recorded = figures.from_tags(chosen.tags)
    plan = steps._county_plan(platform, tenant)
    steps.check_secret(chosen, plan.app_secret)
    target = restored_disk_path(platform, site, vm_name or plan.name, chosen.id)
    if target.exists():
        restored.check_existing(target)  # refuses what is not a ccdata disk
        return RestoredDisk(target, chosen.id, original_id, chosen.time, recorded, made=False)
    work = platform.artifacts_dir / "restore-disk" / f"{target.stem}-{uuidlib.uuid4().hex[:8]}"
    try:
        fetched = fetch_checked(restic, repo, chosen, work / "tenant.db")
        restored.make(target, size_mib or plan.data_disk_mib, fetched.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RestoredDisk(target, chosen.id, original_id, chosen.time, recorded, made=True)


@dataclass(frozen=True)
class FetchedDb:
    path: Path
    bytes: int
    figures: Figures
    wall_s: float


def fetch_checked(restic: steps.Restic, repo: Repository, chosen: Snapshot, target: Path) -> FetchedDb:
    """`restic dump` of the point's database, integrity_check, and its figures against those recorded
    (a point without recorded figures, or with other ones, is refused)."""
    done = restic.dump(repo, chosen.id, f"/{consistent.DATABASE_FILENAME}", target)
    check_sqlite(done.target, CopyCheck.FULL)
    found = figures.read(done.target)
    differ = figures.differences(figures.from_tags(chosen.tags), found)
    if differ:
        raise figures.FiguresError(f"snapshot {chosen.id[:8]}: {'; '.join(differ)}")
    return FetchedDb(done.target, done.bytes, found, done.wall_s)


# --- backup now --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupTaken:
    snapshot_id: str  # in the primary's repository
    reused: bool  # an earlier attempt with the same key had made it
    figures: dict[str, str]
    bytes: int | None
    offsite: str  # the offsite step's report
    steps: dict[str, str]  # each step's summary


def backup_now(platform: Platform, tenant: str, *, sites: BackupSites | None = None, key: str | None = None,
               tier: ProtectionTier = ProtectionTier.BACKUP, producer: Sequence[str] | None = None,
               log: steps.LogFn | None = None) -> BackupTaken:
    """A backup round of `tenant` now, run inline (no job record): the app-consistent copy, figures,
    snapshot, offsite copy and retention. `key` (default: a new one) is the round's identity: called
    again with the same key after a crash, it finds the restore point already made. `producer` is
    the command writing the database to stdout (default: the guest's online backup over SSH)."""
    sites = sites or sites_of(platform.engine, tenant)
    if records.current_site(platform.engine, tenant) != sites.primary:
        raise RuntimeError(f"{tenant} runs at {records.current_site(platform.engine, tenant)}, "
                           f"not {sites.primary}: its rounds are written where it runs")
    key = key or f"now-{uuidlib.uuid4().hex[:12]}"
    args = steps.BackupArgs(tenant=tenant, offsite_site=sites.offsite, rest_port=sites.rest_port, tier=tier)
    work = platform.artifacts_dir / "backup-now" / key
    work.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(job_id=key, args=args.model_dump(mode="json"), artifacts=work,
                      _log=log or (lambda _line: None))
    said: dict[str, str] = {}
    try:
        for step in steps.backup_steps(args.model_dump(mode="json"), platform, producer=producer,
                                       look_up_always=True):
            result = step.run(ctx)
            if isinstance(result, StepResult):
                ctx.previous = {**ctx.previous, step.name: result.model_dump(mode="json")}
                said[step.name] = result.summary()
            else:
                said[step.name] = str(result or "")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    snapshotted = ctx.result("snapshot", steps.Snapshotted)
    staged = ctx.result_or_none("copy", steps.Staged)
    return BackupTaken(snapshot_id=snapshotted.snapshot_id, reused=snapshotted.reused,
                       figures=ctx.result("figures", Figures).tags(), bytes=staged.bytes if staged else None,
                       offsite=said.get("offsite", ""), steps=said)


def record_verification(engine: Engine, tenant: str, point: RestoredDisk | Snapshot, *, site: str, ok: bool,
                        detail: str = "", job_id: str | None = None) -> None:
    """Mark a restore point proven (or not) after a restore onto a VM served its recorded figures."""
    snapshot_id = point.snapshot_id if isinstance(point, RestoredDisk) else point.id
    verifications.record(engine, tenant=tenant, snapshot_id=snapshot_id, original_id=point.original_id
                         if isinstance(point, RestoredDisk) else point.original, site=site, ok=ok,
                         detail=detail, job_id=job_id)


# --- offsite catch-up and per-county status ------------------------------------------------------

def copy_offsite(platform: Platform, sites: BackupSites,
                 tenants: Collection[str] | None = None) -> CopyResult:
    """Copy every restore point the offsite repository lacks: what brings the offsite copy level
    again after its site or server was away. Idempotent. Only the unpaired are named to `restic
    copy` (backup/pairing.py): restic would copy a point written to both repositories a second time
    (it knows copies by `original` only). `skipped`: the primary's points the offsite holds.
    `tenants`: only those counties' points (a failed-over county's pair, the secondary to the
    primary, must not copy back what the secondary holds of the counties at home); None: all."""
    restic = steps._restic(platform, sites.primary)
    pair = repository.ensure_pair(restic, platform.state_dir, sites.primary, sites.offsite, sites.rest_port)
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        there = pool.submit(restic.snapshots, pair.offsite)
        here = restic.snapshots(pair.primary)
        offsite = there.result()
    if tenants is not None:
        here = [snapshot for snapshot in here if snapshot.tag_value(consistent.COUNTY_TAG) in tenants]
    missing = pairing.unpaired(here, offsite)
    held = tuple(snapshot.short_id for snapshot in here if snapshot not in missing)
    if not missing:
        return CopyResult(copied={}, skipped=held, wall_s=time.monotonic() - began)
    done = restic.copy(pair.offsite, pair.primary, snapshot_ids=[snapshot.id for snapshot in missing])
    return CopyResult(copied=done.copied, skipped=held + done.skipped, wall_s=time.monotonic() - began)


def points_by_county(platform: Platform, sites: BackupSites) -> tuple[dict[str, list[RestorePointInfo]],
                                                                      dict[str, str]]:
    """Every county's restore points at this pair of sites, from one `restic snapshots` per repository
    (what the metrics read each scrape); and the repositories that could not be read."""
    restic = steps._restic(platform, sites.primary)
    found: dict[str, list[Snapshot]] = {}
    unreachable: dict[str, str] = {}
    for site in (sites.primary, sites.offsite):
        try:
            found[site] = restic.snapshots(reach(platform, site, sites.primary, sites.rest_port))
        except (ResticError, OSError, RuntimeError) as error:
            unreachable[site] = str(error)[:500]
            found[site] = []
    counties: dict[str, tuple[list[Snapshot], list[Snapshot]]] = {}
    for index, site in enumerate((sites.primary, sites.offsite)):
        for snapshot in found[site]:
            county = snapshot.tag_value(consistent.COUNTY_TAG)
            if county:
                counties.setdefault(county, ([], []))[index].append(snapshot)
    return ({county: merge_points(primary, offsite, verifications.of_tenant(platform.engine, county))
             for county, (primary, offsite) in counties.items()}, unreachable)


@dataclass(frozen=True)
class CountyStatus:
    """What the metrics and the console show per county (None: nothing to say yet)."""

    tenant: str
    points: int
    last_backup_age_s: float | None
    offsite_lag_s: float | None
    last_verified_ok: bool | None
    last_verified_age_s: float | None
    bytes: int | None  # the newest restore point's database


def county_status(tenant: str, points: Sequence[RestorePointInfo],
                  proofs: Sequence[verifications.Verification], now: datetime) -> CountyStatus:
    """Pure: a county's backup status from its restore points and verifications."""
    primary = [policy.RestorePoint(p.snapshot_id, p.taken_at, offsite=p.offsite) for p in points if p.primary]
    offsite = [policy.RestorePoint(p.snapshot_id, p.taken_at) for p in points if p.offsite]
    newest = max(points, key=lambda p: p.taken_at, default=None)
    proof = verifications.newest(proofs)
    return CountyStatus(
        tenant=tenant, points=len(points),
        last_backup_age_s=(now - newest.taken_at).total_seconds() if newest else None,
        offsite_lag_s=policy.offsite_lag(primary, offsite).total_seconds() if primary else None,
        last_verified_ok=proof.ok if proof else None,
        last_verified_age_s=(now - proof.verified_at).total_seconds() if proof else None,
        bytes=newest.bytes if newest else None)


def repository_bytes(platform: Platform, site: str) -> int:
    """The size of a site's repository on its disk (what the offsite server stores too)."""
    root = repository.site_backup(platform.state_dir, site).repository_dir
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file()) if root.exists() else 0


@dataclass(frozen=True)
class Thresholds:
    """When a county's backups call for an operator (alerts; the metrics carry the raw figures)."""

    offsite_lag_s: float = 300.0  # the offsite copy five minutes behind
    backup_age_s: float = 180.0  # three missed 60-second rounds
    verification_age_s: float = 26 * 3600.0  # the daily verification missed


def alerts(status: CountyStatus, thresholds: Thresholds = Thresholds()) -> list[str]:
    """Pure: what is wrong with a county's backups, one line each (empty: all is well)."""
    said = []
    if status.last_backup_age_s is None:
        said.append(f"{status.tenant}: no restore point")
    elif status.last_backup_age_s > thresholds.backup_age_s:
        said.append(f"{status.tenant}: newest restore point {status.last_backup_age_s:.0f} s old")
    if status.offsite_lag_s is not None and status.offsite_lag_s > thresholds.offsite_lag_s:
        said.append(f"{status.tenant}: offsite copy {status.offsite_lag_s:.0f} s behind")
    if status.last_verified_ok is False:
        said.append(f"{status.tenant}: the last verification failed")
    elif status.last_verified_age_s is None or status.last_verified_age_s > thresholds.verification_age_s:
        said.append(f"{status.tenant}: no verification within {thresholds.verification_age_s / 3600:.0f} h")
    return said


def check_repositories(platform: Platform, sites: BackupSites, *, read_data_subset: str = "10%",
                       skip: Collection[str] = ()) -> dict[str, CheckResult]:
    """`restic check --read-data-subset` of both repositories (a damaged pack is found only by
    reading it): the daily check; each site's result, damage as `ok=False` (not an exception).
    `skip`: sites already checked (through another pair)."""
    restic = restic_at(platform, sites.primary)
    return {site: restic.check(reach(platform, site, sites.primary, sites.rest_port),
                               read_data_subset=read_data_subset)
            for site in (sites.primary, sites.offsite) if site not in skip}
