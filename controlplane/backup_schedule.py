"""The backup schedule the service runs (`countycloud serve`): each county's round on its tier's
interval, the offsite catch-up, pruning, the daily verification, and the platform database's own
backup. Registered with controlplane.workers.register_periodic; each fire runs once across workers.

Rounds and verifications are jobs (submitted, so a failed round is resumed by the next fire: an
unfinished job with the same arguments is that job); the catch-up, pruning and the platform database
are plain restic calls made by the fire itself, each idempotent. Scheduled work is not audited one
event per minute: the audit log records who asked for a change, and the schedule asks nothing new.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from backup import ops, platformdb, repository
from backup.policy import ProtectionTier, policy_of
from backup.steps import BackupArgs, RestoreArgs, RestoreMode
from controlplane import bootstrap, jobs
from inventory import queries
from inventory.db import session_scope
from inventory.enums import Lifecycle, SiteRole
from inventory.jobs import JobKind

log = logging.getLogger("countycloud.backup")


class Work:
    ROUNDS = "backup-rounds"
    OFFSITE = "backup-offsite"
    PRUNE = "backup-prune"
    VERIFY = "backup-verify"
    PLATFORM_DB = "backup-platform-db"


def cron_every(interval: timedelta) -> str:
    """A six-field cron (seconds first) firing every `interval`: a divisor of a minute in seconds,
    or whole minutes dividing an hour."""
    seconds = int(interval.total_seconds())
    if seconds <= 0:
        raise ValueError("an interval is positive")
    if seconds < 60 and 60 % seconds == 0:
        return f"*/{seconds} * * * * *" if seconds > 1 else "* * * * * *"
    if seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        minutes = seconds // 60
        return "0 * * * * *" if minutes == 1 else f"0 */{minutes} * * * *"
    raise ValueError(f"an interval of {seconds} s does not divide a minute or an hour")


@dataclass(frozen=True)
class Schedule:
    rounds: str = cron_every(policy_of(ProtectionTier.BACKUP).interval)
    offsite: str = "30 * * * * *"  # a minute apart, between rounds
    prune: str = "0 15 3 * * *"  # daily
    verify: str = "0 45 3 * * *"  # daily, each county's newest offsite point
    platform_db: str = "0 */10 * * * *"


def protected_counties() -> list[str]:
    """Counties whose VM serves: active, one VM (a county being provisioned has nothing to keep)."""
    with session_scope(bootstrap.engine()) as session:
        return [tenant.slug for tenant in queries.list_tenants(session, Lifecycle.ACTIVE)
                if len(queries.vms_of(tenant)) == 1]


def _each(what: str, slugs: list[str], action: Callable[[str], object]) -> None:
    for slug in slugs:
        try:
            action(slug)
        except Exception:  # one county's trouble must not stop the others' rounds
            log.exception("%s of %s failed", what, slug)


def _submit(kind: JobKind, slug: str, args: dict[str, object], site: str) -> str:
    platform = bootstrap.platform()
    return jobs.submit(platform.engine, kind, slug, args, artifacts_root=platform.artifacts_dir, site=site)


def submit_round(slug: str) -> str:
    sites = ops.sites_of(bootstrap.engine(), slug, bootstrap.settings().backup_rest_port)
    args = BackupArgs(tenant=slug, offsite_site=sites.offsite, rest_port=sites.rest_port)
    return _submit(JobKind.BACKUP, slug, args.model_dump(mode="json"), sites.primary)


def submit_verification(slug: str) -> str:
    sites = ops.sites_of(bootstrap.engine(), slug, bootstrap.settings().backup_rest_port)
    args = RestoreArgs(tenant=slug, mode=RestoreMode.VERIFY, site=sites.offsite, from_site=sites.offsite,
                       primary_site=sites.primary, rest_port=sites.rest_port)
    return _submit(JobKind.RESTORE, slug, args.model_dump(mode="json"), sites.offsite)


def pairs() -> set[ops.BackupSites]:
    """The (primary, offsite) pairs the protected counties' backups use."""
    port = bootstrap.settings().backup_rest_port
    return {ops.sites_of(bootstrap.engine(), slug, port) for slug in protected_counties()}


def rounds(_at: datetime) -> None:
    _each("backup round", protected_counties(), submit_round)


def verify(_at: datetime) -> None:
    _each("verification", protected_counties(), submit_verification)


def offsite(_at: datetime) -> None:
    platform = bootstrap.platform()
    for sites in pairs():
        try:
            done = ops.copy_offsite(platform, sites)
            if done.copied:
                log.info("offsite catch-up %s -> %s: %d copied", sites.primary, sites.offsite,
                         len(done.copied))
        except Exception as error:  # away: the lag grows and the metrics say so; the next fire retries
            log.warning("offsite catch-up %s -> %s: %s", sites.primary, sites.offsite, error)


def prune(_at: datetime) -> None:
    platform = bootstrap.platform()
    for sites in pairs():
        for site in (sites.primary, sites.offsite):
            try:
                repo = ops.reach(platform, site, sites.primary, sites.rest_port)
                ops.restic_at(platform, sites.primary).prune(repo)
            except Exception:
                log.exception("prune of %s's repository failed", site)


def platform_sites() -> ops.BackupSites:
    """The control plane's own pair: the primary-role site, and the other one as offsite."""
    with session_scope(bootstrap.engine()) as session:
        declared = queries.list_sites(session)
        primary = next((site.name for site in declared if site.role is SiteRole.PRIMARY), "primary")
        offsite = next((site.name for site in declared if site.name != primary), "secondary")
    return ops.BackupSites(primary, offsite, bootstrap.settings().backup_rest_port)


def platform_db(_at: datetime) -> None:
    """The platform database (inventory, the counties' secrets, jobs) into the primary's repository,
    encrypted by restic, and copied offsite: what a control plane at the secondary starts from."""
    platform, sites = bootstrap.platform(), platform_sites()
    restic = ops.restic_at(platform, sites.primary)
    local = repository.ensure_local(restic, platform.state_dir, sites.primary)
    with tempfile.TemporaryDirectory(dir=platform.state_dir, prefix=".platform-db-") as scratch:
        platformdb.backup(restic, local, bootstrap.settings().database_url, Path(scratch))
    try:
        ops.copy_offsite(platform, sites)
    except Exception as error:
        log.warning("platform database copy offsite: %s", error)


_registered = False


def register(schedule: Schedule = Schedule()) -> None:
    """Declare the backup work with the workers (once per process, before they start)."""
    global _registered
    if _registered:
        return
    from controlplane import workers

    workers.register_periodic(Work.ROUNDS, schedule.rounds, rounds)
    workers.register_periodic(Work.OFFSITE, schedule.offsite, offsite)
    workers.register_periodic(Work.PRUNE, schedule.prune, prune)
    workers.register_periodic(Work.VERIFY, schedule.verify, verify)
    workers.register_periodic(Work.PLATFORM_DB, schedule.platform_db, platform_db)
    _registered = True
