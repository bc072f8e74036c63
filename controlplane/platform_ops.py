"""The control plane's own survival (issue 15, docs/dr.md "The control plane's own survival").

Its database (inventory, the counties' secrets, jobs, the fence ledger) is copied into the primary's
repository and offsite every 10 minutes (controlplane.backup_schedule.copy_platform_db; `back_up`
runs it now). When the service is lost with its site, `recover` starts a control plane at the DR
site from that copy: the newest (or a chosen) platform-db snapshot of the DR site's own repository,
read by path, restored into the configured database only when that database is missing or empty,
migrated to head, the recovery audited, and what the copy holds told (counties, sites, where each
county runs, fenced copies, the copy's age, jobs it left unfinished, what else the DR site holds).

Nothing is half-written: SQLite is restored, checked, migrated and audited under a staging name and
then renamed into place; PostgreSQL is restored in one transaction (pg_restore --single-transaction),
with a marker in the state folder so that a rerun after a crash between the restore and its audit
event finishes the recovery instead of taking the restored database for a live one. A rerun after a
recovery that nothing has used since says so and changes nothing; any other database present is
refused.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url

from backup import platformdb, repository
from backup.platformdb import PlatformDbError
from backup.restic import (
    Repository,
    Restic,
    ResticError,
    Snapshot,
    write_password_file,
)
from controlplane import audit, bootstrap, platform_recovery_audit, platform_target
from controlplane.actors import Actor
from controlplane.errors import ControlPlaneError
from controlplane.operations import authorize
from controlplane.platform_offsite import restic_says, site_repository
from controlplane.platform_recovery_plan import Next, RecoveryRefused, next_step
from controlplane.roles import Action
from inventory import queries
from inventory.db import make_engine, migrate, session_scope
from inventory.jobs import Job, JobStatus
from provisioning import fencing, probe_accounts, sites

BACKUP_ACTION = "platform.backup"
# The site whose repository holds the offsite copies when the inventory cannot be read (it is what
# is being recovered): the second of the sites every machine runs.
DEFAULT_DR_SITE = bootstrap.DEFAULT_SITES[1]


# --- what the DR site holds besides the database ----------------------------------------------

@dataclass(frozen=True)
class Need:
    """Something besides the database that a control plane at the DR site uses, and whether it is there."""

    what: str
    path: str
    present: bool
    without: str  # what happens without it


def dr_site_needs(state_dir: Path, site: str, counties: list[str]) -> list[Need]:
    """What the failover and the service at `site` read from the state folder (docs/dr.md), checked
    (reads only)."""
    backup = repository.site_backup(state_dir, site)
    platform_key = Path(state_dir) / "ssh" / "id_ed25519"
    probes = [county for county in counties if not probe_accounts.path_of(state_dir, county).exists()]
    return [
        Need(f"{site}'s repository password", str(backup.password_file), backup.password_file.exists(),
             "the failover cannot read the counties' restore points (keep it in the DR safe)"),
        Need(f"{site}'s repository", str(backup.repository_dir), (backup.repository_dir / "config").is_file(),
             "no restore point to bring a county back from"),
        Need(f"{site}'s daemons", str(sites.site_paths(state_dir, site).root),
             sites.state(sites.site_paths(state_dir, site)) is sites.SiteState.UP,
             f"the failover refuses to start: `countycloud site start {site}`"),
        Need("the guests' SSH key", str(platform_key), platform_key.exists(),
             "a new key is made; counties brought up here get it, the ones already running here do "
             "not answer SSH (`tenant exec`, the SSH copy) until configured again"),
        Need("probe accounts", str(probe_accounts.directory(state_dir)), not probes,
             f"monitoring does not probe {', '.join(probes)} until `tenant configure` makes accounts"
             if probes else ""),
    ]


# --- what the copy holds ------------------------------------------------------------------------

@dataclass(frozen=True)
class CountyAt:
    slug: str
    name: str
    home: str
    runs_at: str
    status: str


@dataclass(frozen=True)
class Holding:
    """What a platform database says: the sites, the counties and where each runs, the fence ledger,
    the jobs left unfinished (their processes ran at the lost control plane)."""

    sites: list[dict[str, str]]
    counties: list[CountyAt]
    fenced: list[dict[str, str]]
    unfinished_jobs: list[dict[str, str]]


@dataclass(frozen=True)
class _LedgerHome:
    engine: Any
    state_dir: Path


def holding(url: str, state_dir: Path) -> Holding:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            declared = [{"site": site.name, "role": site.role.value, "status": site.status.value}
                        for site in queries.list_sites(session)]
            counties = [CountyAt(tenant.slug, tenant.name, tenant.home_site.name, tenant.current_site.name,
                                 tenant.status.value) for tenant in queries.list_tenants(session)]
            left = (select(Job).where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
                    .order_by(Job.created_at))
            unfinished = [{"job": job.id, "kind": job.kind.value, "target": job.target,
                           "status": job.status.value} for job in session.scalars(left)]
        fenced = [{"site": copy.site, "vm": copy.vm, "how": copy.how.value,
                   "at": datetime.fromtimestamp(copy.at, UTC).isoformat()}
                  for copy in fencing.fenced(_LedgerHome(engine, state_dir))]
    finally:
        engine.dispose()
    return Holding(declared, counties, fenced, unfinished)


@dataclass(frozen=True)
class Recovery:
    done: Next
    database: str
    site: str
    repository: str
    snapshot_id: str
    original_id: str | None  # the primary's snapshot it is a copy of (restic copy's `original`)
    taken_at: datetime
    age_s: float
    holding: Holding
    needs: list[Need]
    password_installed: str | None = None
    lost_anchor_seq: int | None = None

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["done"] = self.done.value
        found["taken_at"] = self.taken_at.isoformat()
        return found


# --- the use cases ------------------------------------------------------------------------------

def _restore_sqlite(restic: Restic, repo: Repository, snapshot: Snapshot, path: Path, actor: Actor,
                    detail: dict[str, Any]) -> audit.Anchor:
    """Restored, checked, migrated and audited under a staging name, then renamed into place."""
    staging = path.with_name(f".{path.name}.recovering")
    for stale in (staging, staging.with_name(staging.name + "-wal"), staging.with_name(staging.name + "-shm"),
                  staging.with_name(staging.name + ".restoring"), platform_target.jobs_checkpoints(staging)):
        stale.unlink(missing_ok=True)  # a crashed attempt's: never the database itself
    path.parent.mkdir(parents=True, exist_ok=True)
    staging_url = f"sqlite:///{staging}"
    try:
        platformdb.restore(restic, repo, snapshot, staging_url, path.parent, no_lock=True)
        migrate(staging_url)
        head = platform_recovery_audit.record(staging_url, actor, detail)
        engine = make_engine(staging_url)
        try:
            staged_anchor = audit.anchor_path(engine)  # the staging name's, not the database's
            for stale in (staged_anchor, staged_anchor.with_suffix(".lock")):
                stale.unlink(missing_ok=True)
            with engine.connect() as connection:
                # One self-contained file to rename: the log folded in, no -wal left behind.
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                connection.exec_driver_sql("PRAGMA journal_mode=DELETE")
        finally:
            engine.dispose()
        os.replace(staging, path)
    finally:
        for suffix in ("", "-wal", "-shm"):
            staging.with_name(staging.name + suffix).unlink(missing_ok=True)
    return head


def recover(actor: Actor, *, snapshot: str | None = None, site: str = DEFAULT_DR_SITE,
            password_file: Path | None = None) -> Recovery:
    """Start this control plane's database from the platform-db copy held in `site`'s own repository
    (the offsite copy, at the DR site). See the module docstring."""
    authorize(actor, Action.DR)
    settings = bootstrap.settings()
    state_dir, database_url = settings.state_dir, settings.database_url
    url = make_url(database_url)
    where = platform_target.where_of(url)
    try:
        wanted_format = platformdb.format_of(url)
    except PlatformDbError as error:
        raise RecoveryRefused(str(error)) from None
    target = platform_target.inspect_target(database_url)
    unfinished = (platform_target.unfinished(state_dir, where)
                  if wanted_format is platformdb.DumpFormat.PG_CUSTOM else None)
    step = next_step(target, snapshot, unfinished)
    repo, site_password = site_repository(state_dir, site, password_file)
    restic = Restic(cache_dir=None)  # --no-cache: a reader that leaves nothing behind
    try:
        chosen = platformdb.choose(platformdb.snapshots(restic, repo, no_lock=True),
                                   snapshot or (target.recovered_from if step is Next.NOTHING else None)
                                   or (unfinished if step is Next.FINISH else None), repo.location)
        if chosen.tag_value("format") != wanted_format.value:
            raise RecoveryRefused(f"snapshot {chosen.short_id} holds a {chosen.tag_value('format')} copy; "
                                  f"{where} is {url.get_backend_name()}")
        lost_seq = platform_recovery_audit.lost_anchor_seq(database_url) if step is not Next.NOTHING else None
        detail = {"snapshot": chosen.id, "taken_at": chosen.time.isoformat(), "site": site,
                  "repository": repo.location, "lost_anchor_seq": lost_seq}
        head: audit.Anchor | None = None
        if step is Next.RESTORE and wanted_format is platformdb.DumpFormat.SQLITE:
            head = _restore_sqlite(restic, repo, chosen, platform_target.sqlite_path(url), actor, detail)
        elif step is not Next.NOTHING:
            if step is Next.RESTORE:
                platform_target.mark(state_dir, where, chosen)
                try:
                    with tempfile.TemporaryDirectory(dir=state_dir, prefix=".platform-db-") as scratch:
                        platformdb.restore(restic, repo, chosen, database_url, Path(scratch), no_lock=True)
                except Exception:
                    # pg_restore's one transaction left the database empty: nothing to finish.
                    platform_target.unmark(state_dir)
                    raise
            migrate(database_url)
            head = platform_recovery_audit.record(database_url, actor, detail)
            platform_target.unmark(state_dir)
        if head is None:
            head = platform_recovery_audit.head(database_url)
        platform_recovery_audit.settle_anchor(database_url, head)
    except ResticError as error:
        raise restic_says(error, repo) from None
    except PlatformDbError as error:
        raise ControlPlaneError(f"the copy {snapshot or 'newest'} cannot be restored: {error}") from None
    installed = None
    if password_file is not None and not site_password.exists():
        # The failover reads the site's own file: the password that just opened the copy goes there.
        write_password_file(site_password, password_file.read_text().strip())
        installed = str(site_password)
    found = holding(database_url, state_dir)
    return Recovery(
        done=step, database=where, site=site, repository=repo.location, snapshot_id=chosen.id,
        original_id=chosen.original, taken_at=chosen.time,
        age_s=max(0.0, time.time() - chosen.time.timestamp()), holding=found,
        needs=dr_site_needs(state_dir, site, [county.slug for county in found.counties]),
        password_installed=installed, lost_anchor_seq=lost_seq)


@dataclass(frozen=True)
class Copied:
    snapshot_id: str
    format: str
    primary: str
    offsite: str
    offsite_error: str | None


def back_up(actor: Actor) -> Copied:
    """A copy of the platform database now, as the schedule makes one every 10 minutes: into the
    primary's repository, then offsite. Audited."""
    authorize(actor, Action.BACKUP)
    from controlplane import backup_schedule

    try:
        copied = backup_schedule.copy_platform_db()
    except (ResticError, PlatformDbError) as error:
        raise ControlPlaneError(f"the platform database was not copied: {error}") from None
    with session_scope(bootstrap.engine()) as session:
        audit.record(session, actor, BACKUP_ACTION, copied.snapshot_id[:8],
                     detail={"snapshot": copied.snapshot_id, "offsite_error": copied.offsite_error})
    return Copied(copied.snapshot_id, copied.format.value, copied.sites.primary, copied.sites.offsite,
                  copied.offsite_error)

