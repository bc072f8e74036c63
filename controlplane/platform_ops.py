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

This module is the two use cases, the order of their steps and what each failure is called; what
they decide and touch on the way is in modules of their own: platform_recovery_plan (what a recovery
does with the database it finds), platform_target (that database, read, and the marker of a
PostgreSQL recovery cut short), platform_offsite (the DR site's repository), platform_recovery_audit
(the audit chain across the recovery), platform_recovery_report (what the copy and the DR site hold).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from backup import platformdb
from backup.platformdb import PlatformDbError
from backup.restic import Repository, Restic, ResticError, Snapshot, write_password_file
from controlplane import audit, bootstrap, platform_recovery_audit, platform_target
from controlplane.actors import Actor
from controlplane.errors import ControlPlaneError
from controlplane.operations import authorize
from controlplane.platform_offsite import restic_says, site_repository
from controlplane.platform_recovery_plan import Next, RecoveryRefused, next_step
from controlplane.platform_recovery_report import Recovery, dr_site_needs, holding
from controlplane.roles import Action
from inventory.db import make_engine, migrate, session_scope

BACKUP_ACTION = "platform.backup"
# The site whose repository holds the offsite copies when the inventory cannot be read (it is what
# is being recovered): the second of the sites every machine runs.
DEFAULT_DR_SITE = bootstrap.DEFAULT_SITES[1]


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

