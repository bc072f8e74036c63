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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from backup import consistent, ops, platformdb, repository
from backup import rounds as round_plan
from backup.policy import Retention, policy_from, round_period
from backup.restic import Repository, Restic
from backup.steps import BackupArgs, RestoreArgs, RestoreMode
from controlplane import bootstrap, jobs
from inventory import queries
from inventory.db import as_utc, session_scope
from inventory.enums import Lifecycle, SiteRole
from inventory.jobs import Job, JobKind, JobStatus
from inventory.models import Tenant

log = logging.getLogger("countycloud.backup")


class Work:
    ROUNDS = "backup-rounds"
    OFFSITE = "backup-offsite"
    PRUNE = "backup-prune"
    VERIFY = "backup-verify"
    PLATFORM_DB = "backup-platform-db"
    CHECK = "backup-check"


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


# The rounds' fire looks this often for counties whose place in their interval has come
# (backup.rounds): a county's round starts within a tick of its slot.
ROUND_TICK = timedelta(seconds=5)
# A backup job queued or running for longer than this is not counted as running: its worker is gone
# (its county is then due again, and submitting resumes the job). A round takes seconds.
ROUND_STALE_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class Schedule:
    rounds: str = cron_every(ROUND_TICK)  # each county on its tier's interval (backup.rounds)
    offsite: str = "30 * * * * *"  # a minute apart, between rounds
    prune: str = "0 15 3 * * *"  # daily
    verify: str = "0 45 3 * * *"  # daily, each county's newest offsite point
    platform_db: str = "0 */10 * * * *"
    check: str = "0 30 4 * * *"  # daily, after the verification


def _protected(session: Session) -> list[Tenant]:
    """Counties whose VM serves: active, one VM (a county being provisioned has nothing to keep)."""
    return [tenant for tenant in queries.list_tenants(session, Lifecycle.ACTIVE)
            if len(queries.vms_of(tenant)) == 1]


def protected_counties() -> list[str]:
    with session_scope(bootstrap.engine()) as session:
        return [tenant.slug for tenant in _protected(session)]


def _each(what: str, slugs: list[str], action: Callable[[str], object]) -> None:
    for slug in slugs:
        try:
            action(slug)
        except Exception:  # one county's trouble must not stop the others' rounds
            log.exception("%s of %s failed", what, slug)


def _submit(kind: JobKind, slug: str, args: dict[str, object], site: str) -> str:
    platform = bootstrap.platform()
    return jobs.submit(platform.engine, kind, slug, args, artifacts_root=platform.artifacts_dir, site=site)


def county_sites(slug: str) -> ops.BackupSites:
    """The county's pair as it runs now, the offsite's REST port from the settings (per site)."""
    current = bootstrap.settings()
    return ops.sites_of(bootstrap.engine(), slug, current.backup_rest_port, current.backup_rest_ports)


def submit_round(slug: str) -> str:
    sites = county_sites(slug)
    args = BackupArgs(tenant=slug, offsite_site=sites.offsite, rest_port=sites.rest_port)
    return _submit(JobKind.BACKUP, slug, args.model_dump(mode="json"), sites.primary)


def submit_verification(slug: str) -> str:
    sites = county_sites(slug)
    args = RestoreArgs(tenant=slug, mode=RestoreMode.VERIFY, site=sites.offsite, from_site=sites.offsite,
                       primary_site=sites.primary, rest_port=sites.rest_port)
    return _submit(JobKind.RESTORE, slug, args.model_dump(mode="json"), sites.offsite)


def pairs() -> set[ops.BackupSites]:
    """The (primary, offsite) pairs the protected counties' backups use: a failed-over county's is
    the other way round (the secondary to the primary, through the primary's server)."""
    return set(counties_by_pair())


def counties_by_pair() -> dict[ops.BackupSites, set[str]]:
    """The protected counties grouped by the pair of sites their backups use now."""
    grouped: dict[ops.BackupSites, set[str]] = {}
    for slug in protected_counties():
        grouped.setdefault(county_sites(slug), set()).add(slug)
    return grouped


def rpo_objectives(session: Session) -> dict[str, timedelta]:
    """Each protected county's tier interval: the most its newest offsite point may be behind."""
    tiers = queries.protection_tiers(session)
    return {tenant.slug: policy_from(tiers[tenant.protection]).interval for tenant in _protected(session)}


def round_states(engine: Engine, now: datetime) -> list[round_plan.CountyRound]:
    """The protected counties as the round planner sees them: how often each is rounded (its tier's
    interval less the schedule's tick and a round's landing: backup.policy.round_period), newest
    backup job, one queued or running now (a backup asked for by hand counts too)."""
    with session_scope(engine) as session:
        intervals = {slug: round_period(objective, ROUND_TICK)
                     for slug, objective in rpo_objectives(session).items()}
        if not intervals:
            return []
        # Only a job within the last interval can hold a county back (backup.rounds' rules).
        horizon = now - max(intervals.values())
        last = {target: as_utc(at) for target, at in session.execute(
            select(Job.target, func.max(Job.created_at))
            .where(Job.kind == JobKind.BACKUP, Job.created_at >= horizon).group_by(Job.target)).all()}
        busy = set(session.scalars(select(Job.target).where(
            Job.kind == JobKind.BACKUP, Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]),
            func.coalesce(Job.started_at, Job.created_at) >= now - ROUND_STALE_AFTER)))
    return [round_plan.CountyRound(slug, interval, last.get(slug), slug in busy)
            for slug, interval in sorted(intervals.items())]


# When this process's schedule began: slots before it are not owed (a restart does not make every
# county due at once; backup.rounds). Set by the first fire.
_began: datetime | None = None


def rounds(_at: datetime) -> None:
    """Start the rounds whose place in their interval has come, at most backup_concurrency at once."""
    global _began
    now = datetime.now(UTC)  # not the fire's scheduled time: a late fire must not see the past
    _began = _began or now
    plan = round_plan.plan(round_states(bootstrap.engine(), now), now,
                           cap=bootstrap.settings().backup_concurrency, since=_began)
    if plan.waiting:
        log.info("backup rounds waiting for a place (%d running): %s", plan.in_flight,
                 ", ".join(plan.waiting))
    _each("backup round", plan.start, submit_round)


def verify(_at: datetime) -> None:
    _each("verification", protected_counties(), submit_verification)


def offsite(_at: datetime) -> None:
    platform, home = bootstrap.platform(), platform_sites()
    for sites, slugs in counties_by_pair().items():
        try:
            # The platform's own pair copies everything (the platform database too); another pair
            # (a failed-over county's) only its counties: the secondary also holds the copies of the
            # counties at home, which must not be copied back.
            done = ops.copy_offsite(platform, sites, None if sites == home else slugs)
            if done.copied:
                log.info("offsite catch-up %s -> %s: %d copied", sites.primary, sites.offsite,
                         len(done.copied))
        except Exception as error:  # away: the lag grows and the metrics say so; the next fire retries
            log.warning("offsite catch-up %s -> %s: %s", sites.primary, sites.offsite, error)


def retentions() -> dict[str, tuple[ops.BackupSites, Retention]]:
    """Each protected county's pair of sites and its tier's retention."""
    slugs = protected_counties()
    with session_scope(bootstrap.engine()) as session:
        keep = {slug: policy_from(queries.protection_of(session, slug)).retention for slug in slugs}
    return {slug: (county_sites(slug), retention) for slug, retention in keep.items()}


def _pair_order(sites: ops.BackupSites) -> tuple[str, str]:
    return sites.primary, sites.offsite


def prune(_at: datetime) -> None:
    """Daily: each county's snapshots forgotten by its tier's retention (the rounds do it too; this
    catches a county whose rounds stopped or whose tier changed), then the unused data pruned."""
    platform = bootstrap.platform()
    counties = retentions()
    # A repository can be in two pairs (the secondary's is the offsite of the counties at home and
    # the local one of a county failed over): forgotten per pair, pruned once.
    forgotten: dict[str, tuple[Restic, Repository]] = {}
    for sites in sorted({sites for sites, _ in counties.values()}, key=_pair_order):
        for site in (sites.primary, sites.offsite):
            try:
                repo = ops.reach(platform, site, sites.primary, sites.rest_port)
                restic = ops.restic_at(platform, sites.primary)
                for slug, (its_sites, retention) in sorted(counties.items()):
                    if its_sites == sites:
                        restic.forget(repo, retention, tags=[consistent.county_tag(slug)], group_by="host")
                forgotten.setdefault(site, (restic, repo))
            except Exception:
                log.exception("forget in %s's repository failed", site)
    for site, (restic, repo) in sorted(forgotten.items()):
        try:
            restic.prune(repo)
        except Exception:
            log.exception("prune of %s's repository failed", site)


def check(_at: datetime) -> None:
    """Daily: read a tenth of every repository's packs (ten days read all of it once)."""
    from controlplane import backup_metrics

    platform = bootstrap.platform()
    checked: set[str] = set()  # a repository in two pairs is read once
    for sites in sorted(pairs(), key=_pair_order):
        try:
            for site, result in ops.check_repositories(platform, sites, skip=checked).items():
                checked.add(site)
                backup_metrics.publish_check(site, result.ok, result.errors)
        except Exception:
            log.exception("check of %s/%s's repositories failed", sites.primary, sites.offsite)


def platform_sites() -> ops.BackupSites:
    """The control plane's own pair: the primary-role site, and the other one as offsite."""
    with session_scope(bootstrap.engine()) as session:
        declared = queries.list_sites(session)
        primary = next((site.name for site in declared if site.role is SiteRole.PRIMARY), "primary")
        offsite = next((site.name for site in declared if site.name != primary), "secondary")
    current = bootstrap.settings()
    ports = ops.rest_ports(bootstrap.engine(), current.backup_rest_port, current.backup_rest_ports)
    return ops.BackupSites(primary, offsite, ports.get(offsite, current.backup_rest_port))


@dataclass(frozen=True)
class PlatformCopy:
    """One copy of the platform database: its snapshot at the primary, and whether it reached the
    offsite repository (`offsite_error` says why not)."""

    snapshot_id: str
    format: platformdb.DumpFormat
    sites: ops.BackupSites
    offsite_error: str | None = None


def copy_platform_db() -> PlatformCopy:
    """The platform database (inventory, the counties' secrets, jobs, the fence ledger) into the
    primary's repository, encrypted by restic, and copied offsite: what a control plane at the
    secondary starts from (`countycloud platform recover`). A failed offsite copy is reported, not
    raised: the snapshot at the primary is made, and the next copy catches up."""
    platform, sites = bootstrap.platform(), platform_sites()
    restic = ops.restic_at(platform, sites.primary)
    local = repository.ensure_local(restic, platform.state_dir, sites.primary)
    with tempfile.TemporaryDirectory(dir=platform.state_dir, prefix=".platform-db-") as scratch:
        taken = platformdb.backup(restic, local, bootstrap.settings().database_url, Path(scratch))
    try:
        ops.copy_offsite(platform, sites)
    except Exception as error:  # the offsite server away: the copy waits for the next fire
        return PlatformCopy(taken.result.snapshot_id, taken.format, sites, str(error))
    return PlatformCopy(taken.result.snapshot_id, taken.format, sites)


def platform_db(_at: datetime) -> None:
    """The schedule's fire: `copy_platform_db`, a failed offsite copy logged."""
    copied = copy_platform_db()
    if copied.offsite_error is not None:
        log.warning("platform database copy offsite: %s", copied.offsite_error)


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
    workers.register_periodic(Work.CHECK, schedule.check, check)
    from controlplane import replication_schedule  # the replicated tier's stream (issue 12)

    replication_schedule.register()
    _registered = True
